//! memlayer tracing itself (issue 17): a `tracing` [`Layer`] that turns
//! memlayer's own spans (the HTTP request, append, embed batch, search legs,
//! context assembly, summary step, workflow step) into OpenTelemetry spans
//! written to the observability store under a configured tenant, and
//! optionally exported to an external OTLP/HTTP collector.
//!
//! - **Sampling** is decided once per trace, at its root span (a span with
//!   no parent), by `observability.self_tracing.ratio`; every descendant
//!   follows its root's decision, so a trace is whole or absent.
//! - **Off the hot path.** A finished sampled span is handed to a bounded
//!   channel with `try_send` ([`SpanSink::offer`]): when the channel is full
//!   the span is dropped and counted ([`SpanSink::dropped`]), never waited
//!   for. A [`SpanWriter`] task drains the channel in batches (up to
//!   `batch` spans, or what came within `linger_ms` of the first) and writes
//!   each batch through the store's one `ingest` (and to the collector).
//! - **No feedback.** Spans begun inside the writer (were the store ever
//!   instrumented) are never sampled: the writer runs in a task-local scope
//!   the layer checks at every root.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memlayer_domain::TenantId;
use memlayer_domain::observability::{Attributes, EventInput, NewSpan, Scope, SpanInput, SpanLimits};
use memlayer_ports::{MAX_INGEST_SPANS, ObservabilityStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes as SpanAttributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

mod otlp;

pub use otlp::OtlpExport;

/// The instrumentation scope memlayer's own spans carry.
pub const SCOPE_NAME: &str = "memlayer";

/// `observability.self_tracing.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfTracingConfig {
    /// Trace memlayer's own operations.
    pub enabled: bool,
    /// The share of traces (HTTP requests, background rounds) recorded,
    /// 0 to 1, decided at each trace's root.
    pub ratio: f64,
    /// The tenant the spans are written under.
    pub tenant: String,
    /// Finished spans waiting for the writer; past it, spans are dropped
    /// and counted.
    pub queue: usize,
    /// Most spans one write carries.
    pub batch: usize,
    /// How long the writer waits for a batch to fill after its first span.
    pub linger_ms: u64,
    /// Write the spans to this server's own store.
    pub store: bool,
    /// Also export the spans to this OTLP/HTTP traces endpoint (the full
    /// URL, e.g. `http://collector:4318/v1/traces`), as protobuf.
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every export (e.g. `authorization`).
    pub otlp_headers: BTreeMap<String, String>,
    /// Seconds an export may take.
    pub otlp_timeout_secs: u64,
}

impl Eq for SelfTracingConfig {}

/// The default share of traces recorded.
pub const DEFAULT_RATIO: f64 = 0.1;

impl Default for SelfTracingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ratio: DEFAULT_RATIO,
            tenant: "memlayer".into(),
            queue: 8192,
            batch: 512,
            linger_ms: 200,
            store: true,
            otlp_endpoint: None,
            otlp_headers: BTreeMap::new(),
            otlp_timeout_secs: 10,
        }
    }
}

impl SelfTracingConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// The key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(("observability.self_tracing.ratio", "must be a number between 0 and 1".into()));
        }
        TenantId::parse(self.tenant.clone())
            .map_err(|e| ("observability.self_tracing.tenant", format!("not a tenant id: {e}")))?;
        if !(1..=1_000_000).contains(&self.queue) {
            return Err(("observability.self_tracing.queue", "must be between 1 and 1000000".into()));
        }
        if !(1..=MAX_INGEST_SPANS).contains(&self.batch) {
            return Err(("observability.self_tracing.batch", format!("must be between 1 and {MAX_INGEST_SPANS}")));
        }
        if self.linger_ms > 60_000 {
            return Err(("observability.self_tracing.linger_ms", "must be at most 60000".into()));
        }
        if let Some(url) = &self.otlp_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(("observability.self_tracing.otlp_endpoint", "must be an http:// or https:// URL".into()));
        }
        if !(1..=300).contains(&self.otlp_timeout_secs) {
            return Err(("observability.self_tracing.otlp_timeout_secs", "must be between 1 and 300".into()));
        }
        Ok(())
    }
}

/// Whether a root span begun now is sampled, at a ratio.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Sampled when a random `u64` is below it; `None`: always.
    threshold: Option<u64>,
}

impl Sampler {
    /// Samples `ratio` of the roots (clamped to 0..=1).
    #[must_use]
    pub fn new(ratio: f64) -> Self {
        if ratio >= 1.0 {
            return Self { threshold: None };
        }
        let ratio = if ratio.is_nan() { 0.0 } else { ratio.max(0.0) };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "0 ≤ ratio < 1"
        )]
        let threshold = (ratio * u64::MAX as f64) as u64;
        Self { threshold: Some(threshold) }
    }

    /// One decision.
    #[must_use]
    pub fn sample(&self) -> bool {
        self.threshold.is_none_or(|t| t > 0 && fastrand::u64(..) < t)
    }
}

/// The sending half of the span queue: never waits.
#[derive(Debug, Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanInput>,
    dropped: Arc<AtomicU64>,
}

/// The receiving half of the span queue, for a [`SpanWriter`].
#[derive(Debug)]
pub struct SpanQueue {
    rx: mpsc::Receiver<SpanInput>,
    dropped: Arc<AtomicU64>,
}

/// A bounded span queue of `capacity` spans.
#[must_use]
pub fn span_queue(capacity: usize) -> (SpanSink, SpanQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (SpanSink { tx, dropped: dropped.clone() }, SpanQueue { rx, dropped })
}

impl SpanSink {
    /// Queues a finished span without waiting: `false` (and counted) when
    /// the queue is full or its writer is gone.
    pub fn offer(&self, span: SpanInput) -> bool {
        if self.tx.try_send(span).is_ok() {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Spans dropped so far.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    /// Set while the writer runs: roots begun there are not sampled.
    static WRITING: ();
}

fn in_writer() -> bool {
    WRITING.try_with(|()| ()).is_ok()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the layer keeps on each span (in the registry's extensions).
enum Live {
    /// Not recorded (its trace was not sampled).
    Unsampled,
    /// Recorded.
    Sampled(Box<Recorded>),
}

struct Recorded {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start_ns: u64,
    name: String,
    kind: i32,
    attributes: Vec<(String, Value)>,
    events: Vec<EventInput>,
    error: Option<String>,
}

/// OTLP's span kinds used here.
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
/// OTLP's status codes.
const STATUS_UNSET: i32 = 0;
const STATUS_ERROR: i32 = 2;

impl Recorded {
    /// Takes a field: `otel.name`, `otel.kind` and `otel.status_code` (as
    /// `tracing-opentelemetry` names them) set the span's own properties;
    /// an empty field is skipped.
    fn set(&mut self, key: &str, value: Value) {
        match key {
            "otel.name" => {
                if let Value::String(s) = value {
                    self.name = s;
                }
            }
            "otel.kind" => {
                self.kind = match value.as_str().map(str::to_ascii_lowercase).as_deref() {
                    Some("server") => KIND_SERVER,
                    Some("client") => KIND_CLIENT,
                    _ => KIND_INTERNAL,
                };
            }
            "otel.status_code" => {
                if value.as_str().is_some_and(|s| s.eq_ignore_ascii_case("error")) {
                    self.error.get_or_insert_with(String::new);
                }
            }
            _ => {
                if let Some(slot) = self.attributes.iter_mut().find(|(k, _)| k == key) {
                    slot.1 = value;
                } else {
                    self.attributes.push((key.to_owned(), value));
                }
            }
        }
    }
}

/// Collects fields as JSON.
struct Fields<'a>(&'a mut Vec<(String, Value)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), Value::String(format!("{value:?}"))));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), Value::String(value.to_owned())));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name().to_owned(), Value::from(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name().to_owned(), Value::from(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name().to_owned(), Value::from(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name().to_owned(), Value::Bool(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.push((field.name().to_owned(), Value::String(value.to_string())));
    }
}

fn fields_of(visit: impl FnOnce(&mut Fields<'_>)) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    visit(&mut Fields(&mut out));
    out
}

/// The `tracing` layer: records sampled spans and hands finished ones to
/// the [`SpanSink`]. Compose it with [`SelfTraceLayer::filter`] (memlayer's
/// own spans at `info` and above, and its warnings and errors as span
/// events).
#[derive(Debug, Clone)]
pub struct SelfTraceLayer {
    sink: SpanSink,
    sampler: Sampler,
}

impl SelfTraceLayer {
    /// A layer sampling `ratio` of the traces into `sink`.
    #[must_use]
    pub fn new(sink: SpanSink, ratio: f64) -> Self {
        Self { sink, sampler: Sampler::new(ratio) }
    }

    /// The sink spans go to (its dropped count).
    #[must_use]
    pub fn sink(&self) -> &SpanSink {
        &self.sink
    }

    /// Whether the layer wants `meta`: memlayer's spans at `info` and above,
    /// and its events at `warn` and above (recorded on their span).
    #[must_use]
    pub fn wants(meta: &Metadata<'_>) -> bool {
        meta.target().starts_with("memlayer")
            && if meta.is_span() { *meta.level() <= Level::INFO } else { *meta.level() <= Level::WARN }
    }

    /// The per-layer filter of [`SelfTraceLayer::wants`] (static: decided
    /// once per call site).
    #[must_use]
    pub fn filter() -> tracing_subscriber::filter::FilterFn<fn(&Metadata<'_>) -> bool> {
        tracing_subscriber::filter::filter_fn(Self::wants as fn(&Metadata<'_>) -> bool)
    }
}

impl<S> Layer<S> for SelfTraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &SpanAttributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent();
        let inherited = parent.as_ref().map(|p| match p.extensions().get::<Live>() {
            Some(Live::Sampled(r)) => Some((r.trace_id, r.span_id)),
            _ => None,
        });
        let (trace_id, parent_id) = match inherited {
            Some(Some((trace, parent))) => (trace, Some(parent)),
            Some(None) => {
                span.extensions_mut().insert(Live::Unsampled);
                return;
            }
            None => {
                if in_writer() || !self.sampler.sample() {
                    span.extensions_mut().insert(Live::Unsampled);
                    return;
                }
                let mut t = [0_u8; 16];
                t[..8].copy_from_slice(&fastrand::u64(1..).to_be_bytes());
                t[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
                (t, None)
            }
        };
        let meta = attrs.metadata();
        let mut recorded = Recorded {
            trace_id,
            span_id: fastrand::u64(1..).to_be_bytes(),
            parent: parent_id,
            start_ns: now_ns(),
            name: meta.name().to_owned(),
            kind: KIND_INTERNAL,
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        };
        for (k, v) in fields_of(|f| attrs.record(f)) {
            recorded.set(&k, v);
        }
        recorded.attributes.push(("code.namespace".into(), Value::String(meta.target().to_owned())));
        span.extensions_mut().insert(Live::Sampled(Box::new(recorded)));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(Live::Sampled(r)) = ext.get_mut::<Live>() {
            for (k, v) in fields_of(|f| values.record(f)) {
                r.set(&k, v);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let mut ext = span.extensions_mut();
        let Some(Live::Sampled(r)) = ext.get_mut::<Live>() else { return };
        let mut attributes = fields_of(|f| event.record(f));
        let name = attributes
            .iter()
            .position(|(k, _)| k == "message")
            .and_then(|i| match attributes.remove(i).1 {
                Value::String(s) => Some(s),
                _ => None,
            })
            .unwrap_or_else(|| event.metadata().name().to_owned());
        let level = *event.metadata().level();
        attributes.push(("level".into(), Value::String(level.to_string())));
        if level == Level::ERROR {
            r.error = Some(name.clone());
        }
        if r.events.len() < 128 {
            r.events.push(EventInput { time_unix_nano: now_ns(), name, attributes, dropped_attributes_count: 0 });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(Live::Sampled(r)) = span.extensions_mut().remove::<Live>() else { return };
        let r = *r;
        let end = now_ns().max(r.start_ns);
        let (status_code, status_message) = match r.error {
            Some(m) => (STATUS_ERROR, m),
            None => (STATUS_UNSET, String::new()),
        };
        self.sink.offer(SpanInput {
            trace_id: r.trace_id.to_vec(),
            span_id: r.span_id.to_vec(),
            parent_span_id: r.parent.map(|p| p.to_vec()).unwrap_or_default(),
            trace_state: String::new(),
            name: r.name,
            kind: r.kind,
            start_time_unix_nano: r.start_ns,
            end_time_unix_nano: end,
            attributes: r.attributes,
            dropped_attributes_count: 0,
            events: r.events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status_code,
            status_message,
        });
    }
}

/// Where the writer sends accepted spans.
pub trait SpanExport: Send + Sync + std::fmt::Debug {
    /// Writes one batch; an error is logged by the writer and the batch is
    /// not retried (self-tracing never holds memlayer back).
    fn export<'a>(
        &'a self,
        spans: &'a [NewSpan],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// Writes spans to the observability store under one tenant.
#[derive(Debug, Clone)]
pub struct StoreExport {
    store: Arc<dyn ObservabilityStore>,
    tenant: TenantId,
}

impl StoreExport {
    /// Spans of `tenant` into `store`.
    #[must_use]
    pub fn new(store: Arc<dyn ObservabilityStore>, tenant: TenantId) -> Self {
        Self { store, tenant }
    }
}

impl SpanExport for StoreExport {
    fn export<'a>(
        &'a self,
        spans: &'a [NewSpan],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            for chunk in spans.chunks(MAX_INGEST_SPANS) {
                self.store.ingest(&self.tenant, chunk.to_vec()).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// What a [`SpanWriter`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches written.
    pub batches: u64,
    /// Spans written.
    pub spans: u64,
    /// Spans the queue refused (full) so far.
    pub dropped: u64,
    /// Export failures.
    pub failures: u64,
}

/// Drains a [`SpanQueue`] in batches into its exports.
#[derive(Debug)]
pub struct SpanWriter {
    queue: SpanQueue,
    exports: Vec<Arc<dyn SpanExport>>,
    batch: usize,
    linger: Duration,
    resource: Arc<Attributes>,
    scope: Arc<Scope>,
    limits: SpanLimits,
}

impl SpanWriter {
    /// A writer of `queue`'s spans into `exports`, in batches of at most
    /// `batch` (waiting up to `linger` after a batch's first span for more),
    /// as made by `resource`.
    #[must_use]
    pub fn new(
        queue: SpanQueue,
        exports: Vec<Arc<dyn SpanExport>>,
        batch: usize,
        linger: Duration,
        resource: Attributes,
    ) -> Self {
        Self {
            queue,
            exports,
            batch: batch.clamp(1, MAX_INGEST_SPANS),
            linger,
            resource: Arc::new(resource),
            scope: Arc::new(Scope { name: SCOPE_NAME.into(), version: env!("CARGO_PKG_VERSION").into() }),
            limits: SpanLimits::default(),
        }
    }

    /// Writes what the queue holds now, in batches, without waiting for
    /// more; how many spans it wrote.
    pub async fn flush(&mut self, stats: &mut WriterStats) -> usize {
        let mut total = 0;
        loop {
            let mut buf = Vec::with_capacity(self.batch);
            while buf.len() < self.batch {
                match self.queue.rx.try_recv() {
                    Ok(s) => buf.push(s),
                    Err(_) => break,
                }
            }
            if buf.is_empty() {
                return total;
            }
            total += buf.len();
            self.write(buf, stats).await;
        }
    }

    async fn write(&self, batch: Vec<SpanInput>, stats: &mut WriterStats) {
        let spans: Vec<NewSpan> =
            batch.into_iter().filter_map(|s| s.accept(&self.resource, Some(&self.scope), &self.limits).ok()).collect();
        if spans.is_empty() {
            return;
        }
        stats.batches += 1;
        stats.spans += spans.len() as u64;
        for export in &self.exports {
            if let Err(e) = export.export(&spans).await {
                stats.failures += 1;
                tracing::warn!(error = %e, spans = spans.len(), "self-tracing: spans not written");
            }
        }
    }

    /// Runs until `stop` turns true (then writes what is queued and
    /// returns) or every sender is gone.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> WriterStats {
        WRITING
            .scope((), async move {
                let mut stats = WriterStats::default();
                let mut reported = 0;
                loop {
                    let mut buf = Vec::with_capacity(self.batch);
                    let got = tokio::select! {
                        n = self.queue.rx.recv_many(&mut buf, self.batch) => n,
                        () = async { let _ = stop.wait_for(|s| *s).await; } => {
                            self.flush(&mut stats).await;
                            break;
                        }
                    };
                    if got == 0 {
                        break;
                    }
                    let deadline = tokio::time::Instant::now() + self.linger;
                    while buf.len() < self.batch {
                        let want = self.batch - buf.len();
                        match tokio::time::timeout_at(deadline, self.queue.rx.recv_many(&mut buf, want)).await {
                            Ok(n) if n > 0 => {}
                            _ => break,
                        }
                    }
                    self.write(buf, &mut stats).await;
                    let dropped = self.queue.dropped.load(Ordering::Relaxed);
                    if dropped > reported {
                        tracing::warn!(
                            dropped = dropped - reported,
                            total = dropped,
                            "self-tracing: spans dropped, the queue was full (observability.self_tracing.queue)"
                        );
                        reported = dropped;
                    }
                }
                stats.dropped = self.queue.dropped.load(Ordering::Relaxed);
                stats
            })
            .await
    }
}

/// Self-tracing set up from its configuration: the layer to install in
/// the process's subscriber and, once the services exist, its writer.
#[derive(Debug)]
pub struct SelfTracing {
    layer: SelfTraceLayer,
    queue: SpanQueue,
    config: SelfTracingConfig,
}

/// The running writer: stop it to write what is queued.
#[derive(Debug)]
pub struct SelfTracingHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<WriterStats>,
    sink: SpanSink,
}

impl SelfTracingHandle {
    /// Spans dropped so far (the queue was full).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.sink.dropped()
    }

    /// Writes what is queued and stops the writer.
    pub async fn stop(self) -> WriterStats {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

impl SelfTracing {
    /// `None` when `observability.self_tracing.enabled` is off.
    #[must_use]
    pub fn new(config: &SelfTracingConfig) -> Option<Self> {
        config.enabled.then(|| {
            let (sink, queue) = span_queue(config.queue);
            Self { layer: SelfTraceLayer::new(sink, config.ratio), queue, config: config.clone() }
        })
    }

    /// The layer (with its filter, [`SelfTraceLayer::filter`]).
    #[must_use]
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.layer.clone().with_filter(SelfTraceLayer::filter())
    }

    /// Starts the writer into the services' store (under the configured
    /// tenant, when `store` is on) and the collector (when
    /// `otlp_endpoint` is set).
    ///
    /// # Errors
    /// When the OTLP exporter cannot be built.
    pub fn start(self, services: &crate::Services) -> Result<SelfTracingHandle, String> {
        let mut exports: Vec<Arc<dyn SpanExport>> = Vec::new();
        let instance = services.config.observability.metrics.instance.clone().unwrap_or_else(crate::host_name);
        let mut resource = Attributes::new();
        resource.insert("service.name".into(), Value::String("memlayer".into()));
        resource.insert("service.version".into(), Value::String(env!("CARGO_PKG_VERSION").into()));
        resource.insert("service.instance.id".into(), Value::String(instance));
        if self.config.store {
            let tenant = TenantId::parse(self.config.tenant.clone()).map_err(|e| e.to_string())?;
            exports.push(Arc::new(StoreExport::new(services.observability.store(), tenant)));
        }
        if let Some(url) = &self.config.otlp_endpoint {
            exports.push(Arc::new(OtlpExport::new(
                url,
                &self.config.otlp_headers,
                Duration::from_secs(self.config.otlp_timeout_secs),
                &resource,
            )?));
        }
        let sink = self.layer.sink.clone();
        let writer = SpanWriter::new(
            self.queue,
            exports,
            self.config.batch,
            Duration::from_millis(self.config.linger_ms),
            resource,
        );
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(writer.run(stopping));
        Ok(SelfTracingHandle { stop, task, sink })
    }
}
