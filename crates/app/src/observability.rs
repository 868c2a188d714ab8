//! Observability's use cases (issue 17): [`ObservabilityConfig`]
//! (`observability.*`), [`ObservabilityService`] (ingest charged to the
//! tenant's `limits.ingest_spans` budget, traces, model performance, costs
//! priced by the catalog with their projection, evaluation runs and their
//! comparison, system metric series) and the [`Sampler`] of the server's
//! own process and host.
//!
//! Retention of spans and samples is the retention scheduler's
//! ([`crate::RetentionService::with_observability`]): it runs under the
//! scheduler's lease with the other bookkeeping.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use memlayer_domain::observability::{
    CostDay, CostQuery, EvalCompare, EvalExample, EvalQuery, EvalRun, MAX_COMPARE_RUNS, MetricName, MetricQuery,
    MetricSample, MetricSeries, ModelPrice, NANOS_PER_SEC, NewEvalRun, NewSpan, PerfQuery, PerfSeries, Projection,
    SpanLimits, TraceCursor, TraceDetail, TraceQuery, TraceSummary, UsageRow, compare_runs, daily_costs, performance,
    project, time_to_ns,
};
use memlayer_domain::{CatalogEntity, DomainError, EvalRunId, ListQuery, Page, PageSize, TenantId, TraceId, now};
use memlayer_ports::{IngestReport, MAX_INGEST_SPANS, ObservabilityStore, StoreError, VectorIndex};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{CatalogService, Limiter};

/// Days of cost history the projection's line is fitted on.
pub const PROJECTION_BASIS_DAYS: usize = 14;
/// Days the projection covers.
pub const PROJECTION_HORIZON_DAYS: usize = 30;

/// System metric sampling (`observability.metrics.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Sample the server into the store.
    pub enabled: bool,
    /// Seconds between two samples.
    pub interval_secs: u64,
    /// Days samples are kept.
    pub retention_days: u64,
    /// The name samples are stored under; unset: the host name.
    pub instance: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, interval_secs: 15, retention_days: 7, instance: None }
    }
}

/// Observability (`observability.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityConfig {
    /// Serve `POST /v1/traces` and the `/api/observability` routes.
    pub enabled: bool,
    /// Days a trace is kept after its last span ended.
    pub retention_days: u64,
    /// Most bytes of an OTLP request body once decompressed.
    pub max_request_bytes: usize,
    /// Most spans in one OTLP request.
    pub max_spans_per_request: usize,
    /// Longer string attribute values are cut, with a marker.
    pub max_attribute_bytes: usize,
    /// Most attributes per span, event or link; most events and links per span.
    pub max_attributes: usize,
    /// Most spans a trace's detail returns.
    pub max_trace_spans: u32,
    /// Most model-call spans one performance request reads.
    pub max_scan_spans: u32,
    /// System metric sampling.
    pub metrics: MetricsConfig,
    /// memlayer tracing itself (`observability.self_tracing.*`).
    pub self_tracing: crate::SelfTracingConfig,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        let limits = SpanLimits::default();
        Self {
            enabled: true,
            retention_days: 30,
            max_request_bytes: 32 * 1024 * 1024,
            max_spans_per_request: MAX_INGEST_SPANS,
            max_attribute_bytes: limits.max_attribute_bytes,
            max_attributes: limits.max_attributes,
            max_trace_spans: 10_000,
            max_scan_spans: 1_000_000,
            metrics: MetricsConfig::default(),
            self_tracing: crate::SelfTracingConfig::default(),
        }
    }
}

impl ObservabilityConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// The key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |key: &'static str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) { Ok(()) } else { Err((key, format!("must be between {lo} and {hi}"))) }
        };
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        range("observability.retention_days", self.retention_days, 1, 3650)?;
        range("observability.max_request_bytes", n(self.max_request_bytes), 1024, 1 << 30)?;
        range("observability.max_spans_per_request", n(self.max_spans_per_request), 1, n(MAX_INGEST_SPANS))?;
        range("observability.max_attribute_bytes", n(self.max_attribute_bytes), 64, 1 << 20)?;
        range("observability.max_attributes", n(self.max_attributes), 1, 10_000)?;
        range("observability.max_trace_spans", u64::from(self.max_trace_spans), 1, 100_000)?;
        range("observability.max_scan_spans", u64::from(self.max_scan_spans), 1, 10_000_000)?;
        range("observability.metrics.interval_secs", self.metrics.interval_secs, 1, 3600)?;
        range("observability.metrics.retention_days", self.metrics.retention_days, 1, 3650)?;
        if let Some(i) = &self.metrics.instance
            && (i.is_empty() || i.len() > 128)
        {
            return Err(("observability.metrics.instance", "must be 1 to 128 bytes".into()));
        }
        self.self_tracing.validate()
    }

    /// The limits accepted spans are cut to.
    #[must_use]
    pub fn span_limits(&self) -> SpanLimits {
        SpanLimits { max_attribute_bytes: self.max_attribute_bytes, max_attributes: self.max_attributes }
    }

    /// Traces that ended before this (ns) are past retention.
    #[must_use]
    pub fn trace_cutoff_ns(&self, now_ns: i64) -> i64 {
        days_before(now_ns, self.retention_days)
    }

    /// Samples taken before this (ns) are past retention.
    #[must_use]
    pub fn metric_cutoff_ns(&self, now_ns: i64) -> i64 {
        days_before(now_ns, self.metrics.retention_days)
    }
}

fn days_before(now_ns: i64, days: u64) -> i64 {
    let span = i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(86_400 * NANOS_PER_SEC);
    now_ns.saturating_sub(span)
}

/// A performance report.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceReport {
    /// The query's range start (ns).
    pub from_ns: i64,
    /// The query's range end (ns).
    pub to_ns: i64,
    /// Bucket width (ns).
    pub bucket_ns: i64,
    /// Per (model, agent).
    pub series: Vec<PerfSeries>,
    /// Calls read.
    pub spans_scanned: usize,
    /// The range held more than `observability.max_scan_spans`.
    pub truncated: bool,
}

/// One model's share of a cost report.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCost {
    /// The model.
    pub model: String,
    /// Its catalog prices, if it is in the catalog.
    pub price: Option<ModelPrice>,
    /// Calls.
    pub calls: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cost (`None` when not priced).
    pub cost: Option<f64>,
}

/// A cost report.
#[derive(Debug, Clone, PartialEq)]
pub struct CostReport {
    /// First day (days since the epoch).
    pub from_day: i64,
    /// Day after the last.
    pub to_day: i64,
    /// Usage per day, model and agent, with its cost (`None` when not priced).
    pub rows: Vec<(UsageRow, Option<f64>)>,
    /// Every day of the range.
    pub daily: Vec<CostDay>,
    /// Per model.
    pub by_model: Vec<ModelCost>,
    /// Models used but not in the catalog.
    pub unpriced_models: Vec<String>,
    /// The next 30 days.
    pub projection: Projection,
}

/// Observability's use cases.
#[derive(Debug, Clone)]
pub struct ObservabilityService {
    store: Arc<dyn ObservabilityStore>,
    catalog: Option<CatalogService>,
    limiter: Limiter,
    config: Arc<ObservabilityConfig>,
    connections: Arc<AtomicI64>,
}

impl ObservabilityService {
    /// The service over `store`, charging ingest to `limiter`.
    #[must_use]
    pub fn new(store: Arc<dyn ObservabilityStore>, config: ObservabilityConfig, limiter: Limiter) -> Self {
        Self { store, catalog: None, limiter, config: Arc::new(config), connections: Arc::new(AtomicI64::new(0)) }
    }

    /// Prices come from this catalog.
    #[must_use]
    pub fn with_catalog(mut self, catalog: CatalogService) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ObservabilityConfig {
        &self.config
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> Arc<dyn ObservabilityStore> {
        self.store.clone()
    }

    /// The open-connections gauge the server keeps and the sampler reads.
    #[must_use]
    pub fn connection_gauge(&self) -> Arc<AtomicI64> {
        self.connections.clone()
    }

    /// Stores accepted spans of `tenant`, charged to its ingest budget first
    /// (a refused batch stores nothing).
    ///
    /// # Errors
    /// `RateLimited`; `Invalid` past `observability.max_spans_per_request`;
    /// the store's.
    pub async fn ingest(&self, tenant: &TenantId, spans: Vec<NewSpan>) -> Result<IngestReport, StoreError> {
        if spans.len() > self.config.max_spans_per_request {
            return Err(DomainError::new(
                "spans",
                format!(
                    "at most {} per request (observability.max_spans_per_request)",
                    self.config.max_spans_per_request
                ),
            )
            .into());
        }
        self.limiter.charge_ingest(tenant, u32::try_from(spans.len()).unwrap_or(u32::MAX)).await?;
        self.store.ingest(tenant, spans).await
    }

    /// A page of traces.
    ///
    /// # Errors
    /// `Invalid` naming the filter; the store's.
    pub async fn list_traces(
        &self,
        tenant: &TenantId,
        query: &TraceQuery,
    ) -> Result<Page<TraceSummary, TraceCursor>, StoreError> {
        self.store.list_traces(tenant, query).await
    }

    /// A trace with its spans (at most `observability.max_trace_spans`).
    ///
    /// # Errors
    /// `NotFound`; the store's.
    pub async fn trace(&self, tenant: &TenantId, id: TraceId) -> Result<TraceDetail, StoreError> {
        self.store.trace(tenant, id, self.config.max_trace_spans).await
    }

    /// Model performance over `query`'s range (its `max_calls` is set here).
    ///
    /// # Errors
    /// The store's.
    pub async fn performance(&self, tenant: &TenantId, query: PerfQuery) -> Result<PerformanceReport, StoreError> {
        let query = PerfQuery { max_calls: self.config.max_scan_spans, ..query };
        let calls = self.store.model_calls(tenant, &query).await?;
        Ok(PerformanceReport {
            from_ns: query.from_ns,
            to_ns: query.to_ns,
            bucket_ns: query.bucket_ns,
            series: performance(&calls.calls, query.from_ns, query.bucket_ns),
            spans_scanned: calls.calls.len(),
            truncated: calls.truncated,
        })
    }

    /// The tenant's catalog models' prices, by name.
    async fn prices(&self, tenant: &TenantId) -> Result<std::collections::HashMap<String, ModelPrice>, StoreError> {
        let mut prices = std::collections::HashMap::new();
        let Some(catalog) = &self.catalog else { return Ok(prices) };
        let mut query = ListQuery::new(CatalogEntity::Models).limit(PageSize::new(1000)?);
        loop {
            let page = catalog.list_models(tenant, &query).await?;
            for m in &page.items {
                prices
                    .insert(m.spec.name.clone(), ModelPrice { input: m.spec.input_price, output: m.spec.output_price });
            }
            match page.next_cursor {
                Some(c) => query = query.resume(tenant, &c)?,
                None => break,
            }
        }
        Ok(prices)
    }

    /// Costs per day, model and agent, priced by the catalog, with the
    /// projection over the next [`PROJECTION_HORIZON_DAYS`]; an empty range
    /// is an empty report.
    ///
    /// # Errors
    /// `Invalid` for a bad range; the store's.
    pub async fn costs(&self, tenant: &TenantId, query: &CostQuery) -> Result<CostReport, StoreError> {
        if query.from_day >= query.to_day {
            return Ok(CostReport {
                from_day: query.from_day,
                to_day: query.to_day,
                rows: Vec::new(),
                daily: Vec::new(),
                by_model: Vec::new(),
                unpriced_models: Vec::new(),
                projection: project(&[], PROJECTION_BASIS_DAYS, PROJECTION_HORIZON_DAYS),
            });
        }
        query.validate()?;
        let usage = self.store.daily_usage(tenant, query).await?;
        let prices = self.prices(tenant).await?;
        let price = |m: &str| prices.get(m).copied();
        let daily = daily_costs(&usage, price, query.from_day, query.to_day);
        let mut by_model: Vec<ModelCost> = Vec::new();
        for u in &usage {
            let i = match by_model.iter().position(|m| m.model == u.model) {
                Some(i) => i,
                None => {
                    let p = price(&u.model);
                    by_model.push(ModelCost {
                        model: u.model.clone(),
                        price: p,
                        calls: 0,
                        input_tokens: 0,
                        output_tokens: 0,
                        cost: p.map(|_| 0.0),
                    });
                    by_model.len() - 1
                }
            };
            let m = &mut by_model[i];
            m.calls += u.calls;
            m.input_tokens += u.input_tokens;
            m.output_tokens += u.output_tokens;
            if let (Some(c), Some(p)) = (m.cost.as_mut(), m.price) {
                *c += p.cost(u.input_tokens, u.output_tokens);
            }
        }
        by_model.sort_by(|a, b| a.model.cmp(&b.model));
        let unpriced_models = by_model.iter().filter(|m| m.price.is_none()).map(|m| m.model.clone()).collect();
        let history: Vec<f64> = daily.iter().map(|d| d.cost).collect();
        let projection = project(&history, PROJECTION_BASIS_DAYS, PROJECTION_HORIZON_DAYS);
        let rows = usage
            .into_iter()
            .map(|u| {
                let cost = price(&u.model).map(|p| p.cost(u.input_tokens, u.output_tokens));
                (u, cost)
            })
            .collect();
        Ok(CostReport {
            from_day: query.from_day,
            to_day: query.to_day,
            rows,
            daily,
            by_model,
            unpriced_models,
            projection,
        })
    }

    /// Records an evaluation run.
    ///
    /// # Errors
    /// `Invalid` naming the field; the store's.
    pub async fn create_eval_run(&self, tenant: &TenantId, run: NewEvalRun) -> Result<EvalRun, StoreError> {
        run.validate()?;
        self.store.create_eval_run(tenant, run).await
    }

    /// A page of runs.
    ///
    /// # Errors
    /// The store's.
    pub async fn list_eval_runs(
        &self,
        tenant: &TenantId,
        query: &EvalQuery,
    ) -> Result<Page<EvalRun, String>, StoreError> {
        self.store.list_eval_runs(tenant, query).await
    }

    /// A run.
    ///
    /// # Errors
    /// `NotFound`; the store's.
    pub async fn get_eval_run(&self, tenant: &TenantId, id: EvalRunId) -> Result<EvalRun, StoreError> {
        self.store.get_eval_run(tenant, id).await
    }

    /// A page of a run's examples.
    ///
    /// # Errors
    /// `NotFound`; the store's.
    pub async fn eval_examples(
        &self,
        tenant: &TenantId,
        id: EvalRunId,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<EvalExample>, StoreError> {
        self.store.eval_examples(tenant, id, after, limit).await
    }

    /// Runs side by side: those named (2 to [`MAX_COMPARE_RUNS`], in that
    /// order), or the newest of each model and agent on `dataset`.
    ///
    /// # Errors
    /// `Invalid` for a bad number of ids; `NotFound` for an id the tenant
    /// does not hold; the store's.
    pub async fn compare(
        &self,
        tenant: &TenantId,
        ids: Option<Vec<EvalRunId>>,
        dataset: Option<&str>,
    ) -> Result<EvalCompare, StoreError> {
        let runs = match (ids, dataset) {
            (Some(ids), None) => {
                if !(2..=MAX_COMPARE_RUNS).contains(&ids.len()) {
                    return Err(DomainError::new("ids", format!("name 2 to {MAX_COMPARE_RUNS} runs")).into());
                }
                let mut runs = Vec::with_capacity(ids.len());
                for id in ids {
                    runs.push(self.store.get_eval_run(tenant, id).await?);
                }
                runs
            }
            (None, Some(dataset)) => {
                let limit = u32::try_from(MAX_COMPARE_RUNS).unwrap_or(u32::MAX);
                self.store.latest_eval_runs(tenant, dataset, limit).await?
            }
            _ => return Err(DomainError::new("ids", "give either `ids` or `dataset`").into()),
        };
        Ok(compare_runs(runs))
    }

    /// System metric series.
    ///
    /// # Errors
    /// The store's.
    pub async fn metric_series(&self, tenant: &TenantId, query: &MetricQuery) -> Result<Vec<MetricSeries>, StoreError> {
        self.store.metric_series(tenant, query).await
    }

    /// A sampler of this server, storing under `instance` (the configured
    /// one, else the host name), reading `data_dir` and `index`.
    #[must_use]
    pub fn sampler(&self, data_dir: PathBuf, index: Option<Arc<dyn VectorIndex>>) -> Sampler {
        let instance = self.config.metrics.instance.clone().unwrap_or_else(host_name);
        Sampler {
            store: self.store.clone(),
            instance,
            data_dir,
            index,
            connections: self.connections.clone(),
            interval: Duration::from_secs(self.config.metrics.interval_secs),
            last: None,
        }
    }
}

/// The host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else
/// `memlayer`).
#[must_use]
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .unwrap_or_else(|| "memlayer".to_owned())
}

/// CPU counters read at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    at: Instant,
    /// The process's CPU time, in clock ticks (USER_HZ: 100 per second).
    process_ticks: Option<u64>,
    /// The host's busy and total jiffies.
    host: Option<(u64, u64)>,
}

/// The process's utime + stime from `/proc/self/stat` (fields 14 and 15,
/// counted after the parenthesised command name, which may hold spaces).
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Busy and total jiffies from `/proc/stat`'s `cpu` line (idle and iowait
/// are not busy).
fn host_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// A `kB` line of `/proc/meminfo` or `/proc/self/status`, in bytes.
fn kb_field(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: f64 = line[name.len()..].trim_start_matches(':').split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Bytes of the regular files under `dir` (at most 1,000,000 entries).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0_u32;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            seen += 1;
            if seen > 1_000_000 {
                return total;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Samples the server's process and host into the store every interval.
#[derive(Debug)]
pub struct Sampler {
    store: Arc<dyn ObservabilityStore>,
    instance: String,
    data_dir: PathBuf,
    index: Option<Arc<dyn VectorIndex>>,
    connections: Arc<AtomicI64>,
    interval: Duration,
    last: Option<CpuReading>,
}

#[allow(clippy::cast_precision_loss, reason = "gauges as floating-point samples")]
impl Sampler {
    /// The instance samples are stored under.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Takes one round of samples (CPU utilisation from the second round
    /// on: it is a difference) and stores them.
    ///
    /// # Errors
    /// The store's.
    pub async fn sample(&mut self) -> Result<Vec<MetricSample>, StoreError> {
        let dir = self.data_dir.clone();
        let host = tokio::task::spawn_blocking(move || {
            let read = |p: &str| std::fs::read_to_string(p).ok();
            (
                read("/proc/self/stat"),
                read("/proc/stat"),
                read("/proc/self/status"),
                read("/proc/meminfo"),
                dir_bytes(&dir),
            )
        })
        .await
        .map_err(|e| StoreError::backend(format!("sampler: {e}")))?;
        let (self_stat, stat, status, meminfo, data_bytes) = host;
        let reading = CpuReading {
            at: Instant::now(),
            process_ticks: self_stat.as_deref().and_then(process_ticks),
            host: stat.as_deref().and_then(host_jiffies),
        };
        let at_ns = time_to_ns(now());
        let mut samples = Vec::new();
        let mut push = |name: MetricName, value: f64| {
            if value.is_finite() {
                samples.push(MetricSample { name, instance: self.instance.clone(), at_ns, value });
            }
        };
        if let Some(prev) = self.last {
            let wall = reading.at.duration_since(prev.at).as_secs_f64();
            let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
            if let (Some(a), Some(b)) = (prev.process_ticks, reading.process_ticks)
                && wall > 0.0
            {
                push(MetricName::ProcessCpu, (b.saturating_sub(a) as f64 / 100.0) / wall / cpus);
            }
            if let (Some((busy0, total0)), Some((busy1, total1))) = (prev.host, reading.host)
                && total1 > total0
            {
                push(MetricName::SystemCpu, busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64);
            }
        }
        self.last = Some(reading);
        if let Some(rss) = status.as_deref().and_then(|s| kb_field(s, "VmRSS")) {
            push(MetricName::ProcessMemory, rss);
        }
        if let Some(m) = meminfo.as_deref()
            && let Some(total) = kb_field(m, "MemTotal")
        {
            push(MetricName::SystemMemoryLimit, total);
            if let Some(available) = kb_field(m, "MemAvailable") {
                push(MetricName::SystemMemoryUsage, total - available);
            }
        }
        push(MetricName::DataDir, data_bytes as f64);
        push(MetricName::Connections, self.connections.load(Ordering::Relaxed) as f64);
        match self.store.store_gauges().await {
            Ok(g) => {
                if let Some(bytes) = g.database_bytes {
                    push(MetricName::DatabaseSize, bytes as f64);
                }
                push(MetricName::EmbeddingQueue, g.embedding_queue as f64);
            }
            Err(e) => tracing::debug!(error = %e, "sampler: store gauges unavailable"),
        }
        if let Some(index) = &self.index
            && let Ok(n) = index.len().await
        {
            push(MetricName::VectorIndex, n as f64);
        }
        self.store.record_metrics(samples.clone()).await?;
        Ok(samples)
    }

    /// Samples every interval until `shutdown` turns true.
    pub fn spawn(mut self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.sample().await {
                    tracing::warn!(error = %e, "system metrics: sample not stored");
                }
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        let stat = "4242 (memlayer (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1234 567 0 0 20 0 12 0 100 1 1";
        assert_eq!(process_ticks(stat), Some(1234 + 567));
        let host = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1\n";
        assert_eq!(host_jiffies(host), Some((100 + 5 + 50 + 1 + 2 + 3, 981)));
        let meminfo = "MemTotal:       16000 kB\nMemFree:     1000 kB\nMemAvailable:    4000 kB\n";
        assert_eq!(kb_field(meminfo, "MemTotal"), Some(16_000.0 * 1024.0));
        assert_eq!(kb_field(meminfo, "MemAvailable"), Some(4_000.0 * 1024.0));
        assert_eq!(kb_field("VmRSS:\t   2048 kB\n", "VmRSS"), Some(2048.0 * 1024.0));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn the_configuration_is_checked_key_by_key() {
        assert!(ObservabilityConfig::default().validate().is_ok());
        let bad = ObservabilityConfig { retention_days: 0, ..ObservabilityConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "observability.retention_days");
        let bad = ObservabilityConfig { max_spans_per_request: MAX_INGEST_SPANS + 1, ..ObservabilityConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "observability.max_spans_per_request");
        let mut bad = ObservabilityConfig::default();
        bad.metrics.instance = Some(String::new());
        assert_eq!(bad.validate().unwrap_err().0, "observability.metrics.instance");
        let c = ObservabilityConfig::default();
        assert_eq!(c.trace_cutoff_ns(31 * 86_400 * NANOS_PER_SEC), 86_400 * NANOS_PER_SEC);
    }

    #[test]
    fn the_data_directory_is_summed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0; 10]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), [0; 5]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 15);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }
}
