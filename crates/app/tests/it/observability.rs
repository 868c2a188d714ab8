//! Observability's use cases over the real libSQL store: costs priced by the
//! catalog with their projection, performance, ingest charged to the
//! tenant's budget, retention through the scheduler's purge, the sampler.

use std::sync::Arc;

use memlayer_app::{Config, LimitsConfig, Rate, Services, build};
use memlayer_domain::observability::{
    Attributes, CostQuery, MetricName, MetricQuery, MetricSample, NANOS_PER_SEC, NewSpan, PerfQuery, SpanInput,
    SpanLimits, time_to_ns,
};
use memlayer_domain::{NewModel, TenantId, TraceId, now};
use memlayer_ports::StoreError;
use serde_json::json;

const DAY: i64 = 86_400 * NANOS_PER_SEC;

async fn services(dir: &std::path::Path, limits: LimitsConfig, limited: bool) -> Services {
    let config = Config {
        data_dir: dir.to_path_buf(),
        limits: LimitsConfig { enabled: Some(limited), ..limits },
        ..Config::default()
    };
    build(config).await.unwrap()
}

/// A model call of `model` in trace `trace` starting at `start` (ns).
fn call(trace: u32, span: u32, start: i64, model: &str, input: i64, output: i64) -> NewSpan {
    let mut trace_id = vec![1; 16];
    trace_id[12..].copy_from_slice(&trace.to_be_bytes());
    let mut span_id = vec![2; 8];
    span_id[4..].copy_from_slice(&span.to_be_bytes());
    SpanInput {
        trace_id,
        span_id,
        name: format!("chat {model}"),
        start_time_unix_nano: u64::try_from(start).unwrap(),
        end_time_unix_nano: u64::try_from(start + 500_000_000).unwrap(),
        attributes: vec![
            ("gen_ai.request.model".into(), json!(model)),
            ("gen_ai.usage.input_tokens".into(), json!(input)),
            ("gen_ai.usage.output_tokens".into(), json!(output)),
            ("gen_ai.agent.name".into(), json!("support")),
        ],
        ..SpanInput::default()
    }
    .accept(&Arc::new(Attributes::new()), None, &SpanLimits::default())
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_are_priced_by_the_catalog_and_projected_from_the_trend() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), LimitsConfig::default(), false).await;
    let t = TenantId::parse("acme").unwrap();
    let model = NewModel {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        context_window: 128_000,
        max_output_tokens: 16_384,
        input_price: 2.5,
        output_price: 10.0,
        is_default: true,
    };
    s.catalog.create_model(&t, model).await.unwrap();
    let today = time_to_ns(now()) / DAY;
    // Day d of three: d million input tokens, so the daily cost grows by 2.5 a day.
    let mut spans = Vec::new();
    for d in 1..=3_u32 {
        spans.push(call(d, 1, (today - 3 + i64::from(d)) * DAY + 1_000, "gpt-4o", i64::from(d) * 1_000_000, 0));
    }
    spans.push(call(9, 1, (today - 1) * DAY + 5, "local-llama", 7, 7));
    s.observability.ingest(&t, spans).await.unwrap();
    let q = CostQuery { from_day: today - 2, to_day: today + 1, model: None, agent: None };
    let report = s.observability.costs(&t, &q).await.unwrap();
    let daily: Vec<f64> = report.daily.iter().map(|d| d.cost).collect();
    assert_eq!(daily, [2.5, 5.0, 7.5]);
    assert_eq!(report.unpriced_models, ["local-llama"]);
    let gpt = report.by_model.iter().find(|m| m.model == "gpt-4o").unwrap();
    assert_eq!((gpt.calls, gpt.input_tokens, gpt.cost), (3, 6_000_000, Some(15.0)));
    let local = report.by_model.iter().find(|m| m.model == "local-llama").unwrap();
    assert_eq!((local.cost, local.price), (None, None));
    assert!(report.rows.iter().all(|(u, c)| (u.model == "gpt-4o") == c.is_some()));
    let p = &report.projection;
    assert_eq!(p.basis_days, 3);
    assert!((p.slope_per_day - 2.5).abs() < 1e-9, "{p:?}");
    assert!((p.daily[0] - 10.0).abs() < 1e-9 && (p.daily[29] - 82.5).abs() < 1e-9, "{p:?}");
    let by_agent = CostQuery { agent: Some("nobody".into()), ..q };
    assert!(s.observability.costs(&t, &by_agent).await.unwrap().rows.is_empty());
    // Performance of the same calls: one series per model and agent.
    let perf = PerfQuery {
        from_ns: (today - 3) * DAY,
        to_ns: (today + 1) * DAY,
        bucket_ns: DAY,
        model: None,
        agent: None,
        operation: None,
        max_calls: 0,
    };
    let report = s.observability.performance(&t, perf).await.unwrap();
    assert_eq!((report.spans_scanned, report.truncated, report.series.len()), (4, false, 2));
    assert_eq!(report.series[0].total.latency_ms.unwrap().p50, 500.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_charged_to_the_tenant_s_budget_and_a_refused_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = LimitsConfig { ingest_spans: Rate { per_second: 0.01, burst: 3 }, ..LimitsConfig::default() };
    let s = services(dir.path(), limits, true).await;
    let t = TenantId::parse("acme").unwrap();
    let at = time_to_ns(now());
    s.observability.ingest(&t, vec![call(1, 1, at, "m", 1, 1), call(1, 2, at, "m", 1, 1)]).await.unwrap();
    let refused = s.observability.ingest(&t, vec![call(2, 1, at, "m", 1, 1), call(2, 2, at, "m", 1, 1)]).await;
    assert!(matches!(refused, Err(StoreError::RateLimited { limit: "ingest_spans", .. })), "{refused:?}");
    let trace = TraceId::from_bytes("t", &{
        let mut b = vec![1; 16];
        b[12..].copy_from_slice(&2_u32.to_be_bytes());
        b
    })
    .unwrap();
    assert!(matches!(s.observability.trace(&t, trace).await, Err(StoreError::NotFound { .. })));
    s.observability.ingest(&TenantId::parse("other").unwrap(), vec![call(2, 1, at, "m", 1, 1)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_scheduler_purges_old_traces_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), LimitsConfig::default(), false).await;
    let t = TenantId::parse("acme").unwrap();
    let at = time_to_ns(now());
    let old = at - 31 * DAY;
    s.observability.ingest(&t, vec![call(1, 1, old, "m", 1, 1), call(2, 1, at, "m", 1, 1)]).await.unwrap();
    let sample = |at_ns| MetricSample { name: MetricName::ProcessCpu, instance: "h".into(), at_ns, value: 1.0 };
    s.observability.store().record_metrics(vec![sample(at - 8 * DAY), sample(at)]).await.unwrap();
    assert_eq!(s.retention.purge_observability().await.unwrap(), (1, 1));
    let all = memlayer_domain::observability::TraceQuery { limit: 10, ..Default::default() };
    assert_eq!(s.observability.list_traces(&t, &all).await.unwrap().items.len(), 1, "the recent trace stays");
    let q = MetricQuery { names: vec![], from_ns: at - 30 * DAY, to_ns: at + DAY, bucket_ns: DAY };
    let left = s.observability.metric_series(&t, &q).await.unwrap();
    assert_eq!(left.iter().flat_map(|s| &s.points).map(|p| p.samples).sum::<i64>(), 1);
    // The scheduled round runs the same purge.
    let round = s.retention.run_scheduled().await.unwrap().unwrap();
    assert_eq!((round.traces_purged, round.samples_purged), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_stores_the_process_host_and_store_figures() {
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), LimitsConfig::default(), false).await;
    s.observability.connection_gauge().store(3, std::sync::atomic::Ordering::Relaxed);
    let mut sampler = s.observability.sampler(dir.path().to_path_buf(), Some(s.index.clone()));
    let first = sampler.sample().await.unwrap();
    let names = |v: &[MetricSample]| v.iter().map(|s| s.name).collect::<std::collections::BTreeSet<_>>();
    for name in [MetricName::DataDir, MetricName::Connections, MetricName::EmbeddingQueue, MetricName::DatabaseSize] {
        assert!(names(&first).contains(&name), "{name:?} in {first:?}");
    }
    let connections = first.iter().find(|s| s.name == MetricName::Connections).unwrap();
    assert_eq!(connections.value, 3.0);
    assert!(first.iter().find(|s| s.name == MetricName::DataDir).unwrap().value > 0.0, "the database file");
    assert!(!names(&first).contains(&MetricName::ProcessCpu), "a utilisation needs two readings");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = sampler.sample().await.unwrap();
    if cfg!(target_os = "linux") {
        for name in
            [MetricName::ProcessCpu, MetricName::SystemCpu, MetricName::ProcessMemory, MetricName::SystemMemoryUsage]
        {
            assert!(names(&second).contains(&name), "{name:?} in {second:?}");
        }
    }
    let at = time_to_ns(now());
    let q = MetricQuery { names: vec![MetricName::Connections], from_ns: at - DAY, to_ns: at + DAY, bucket_ns: DAY };
    let series = s.observability.metric_series(&TenantId::default_tenant(), &q).await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].instance, sampler.instance());
    assert_eq!(series[0].points[0].samples, 2);
}

/// A finished span as the self-tracing layer queues it, numbered `n`.
fn queued(n: u8) -> SpanInput {
    SpanInput {
        trace_id: vec![7; 16],
        span_id: vec![n; 8],
        name: format!("op {n}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..SpanInput::default()
    }
}

fn self_tenant() -> TenantId {
    TenantId::parse("memlayer").unwrap()
}

fn store_writer(
    s: &Services,
    queue: memlayer_app::self_tracing::SpanQueue,
    batch: usize,
) -> memlayer_app::self_tracing::SpanWriter {
    use memlayer_app::self_tracing::{SpanExport, SpanWriter, StoreExport};
    let export: Arc<dyn SpanExport> = Arc::new(StoreExport::new(s.observability.store(), self_tenant()));
    SpanWriter::new(queue, vec![export], batch, std::time::Duration::from_millis(10), Attributes::new())
}

async fn self_traces(s: &Services) -> Vec<memlayer_domain::observability::TraceSummary> {
    let all = memlayer_domain::observability::TraceQuery { limit: 100, ..Default::default() };
    s.observability.list_traces(&self_tenant(), &all).await.unwrap().items
}

/// The queue between the layer and the writer never makes a request wait:
/// past its capacity a span is refused at once and counted, and what it
/// holds is written in batches of at most `batch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_tracing_drops_and_counts_spans_past_a_full_queue_and_writes_the_rest_in_batches() {
    use memlayer_app::self_tracing::{WriterStats, span_queue};
    let dir = tempfile::tempdir().unwrap();
    let s = services(dir.path(), LimitsConfig::default(), false).await;
    let (sink, queue) = span_queue(4);
    // No writer runs yet: the queue fills, and `offer` returns at once.
    let offered: Vec<bool> = (1..=6).map(|n| sink.offer(queued(n))).collect();
    assert_eq!(offered, [true, true, true, true, false, false]);
    assert_eq!(sink.dropped(), 2);
    let mut writer = store_writer(&s, queue, 3);
    let mut stats = WriterStats::default();
    assert_eq!(writer.flush(&mut stats).await, 4);
    assert_eq!((stats.batches, stats.spans, stats.failures), (2, 4, 0), "batches of at most 3");
    let traces = self_traces(&s).await;
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].span_count, 4, "the 4 queued spans, not the 2 dropped");
    // Room again: the next span is taken.
    assert!(sink.offer(queued(9)));
    assert_eq!(sink.dropped(), 2);
}

/// The layer records a sampled trace whole (a root and its children, with
/// their fields) and nothing of an unsampled one; the running writer
/// writes what is queued when stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_tracing_layer_records_whole_traces_at_ratio_1_and_none_at_ratio_0() {
    let dir = tempfile::tempdir().unwrap();
    layer_records_whole_traces(services(dir.path(), LimitsConfig::default(), false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_tracing_layer_records_whole_traces_on_postgres() {
    let Some(db) = memlayer_adapters_postgres::testing::fresh_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database: memlayer_app::DatabaseConfig { url: Some(db.url.clone().into()), pool_size: 2, ..Default::default() },
        ..Config::default()
    };
    layer_records_whole_traces(build(config).await.unwrap()).await;
}

async fn layer_records_whole_traces(s: Services) {
    use memlayer_app::self_tracing::{SelfTraceLayer, span_queue};
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    for (ratio, expected) in [(0.0, 0), (1.0, 3)] {
        let (sink, queue) = span_queue(64);
        let layer = SelfTraceLayer::new(sink.clone(), ratio);
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(SelfTraceLayer::filter()));
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!(target: "memlayer_api::server", "request", otel.name = "POST /x",
                otel.kind = "server", http.response.status_code = tracing::field::Empty);
            let _in_root = root.enter();
            {
                let child = tracing::info_span!(target: "memlayer_app::memory", "memory.append", messages = 2_u64);
                let _in_child = child.enter();
                let grandchild = tracing::info_span!(target: "memlayer_app::search", "search.lexical");
                let _in = grandchild.enter();
                tracing::warn!(target: "memlayer_app::search", "slow leg");
            }
            // Not memlayer's: never recorded.
            let _other = tracing::info_span!(target: "hyper", "connection").entered();
            root.record("http.response.status_code", 201_u64);
        });
        let writer = store_writer(&s, queue, 512);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(writer.run(stopping));
        stop.send(true).unwrap();
        let stats = task.await.unwrap();
        assert_eq!((stats.spans, sink.dropped()), (expected, 0), "ratio {ratio}");
    }
    let traces = self_traces(&s).await;
    assert_eq!(traces.len(), 1, "only the sampled trace");
    let detail = s.observability.trace(&self_tenant(), traces[0].trace_id).await.unwrap();
    let by_name = |n: &str| detail.spans.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("{n} in {detail:?}"));
    let (root, child, leaf) = (by_name("POST /x"), by_name("memory.append"), by_name("search.lexical"));
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, memlayer_domain::observability::SpanKind::Server);
    assert_eq!(root.attributes["http.response.status_code"], json!(201));
    assert_eq!(child.parent_span_id, Some(root.span_id));
    assert_eq!(child.attributes["messages"], json!(2));
    assert_eq!(leaf.parent_span_id, Some(child.span_id));
    assert_eq!(leaf.events.len(), 1);
    assert_eq!(leaf.events[0].name, "slow leg");
    assert_eq!(traces[0].name, "POST /x");
}

#[test]
fn self_tracing_settings_are_checked_naming_the_key() {
    use memlayer_app::SelfTracingConfig;
    let bad = |c: SelfTracingConfig| c.validate().unwrap_err().0;
    assert!(SelfTracingConfig::default().validate().is_ok());
    assert_eq!(bad(SelfTracingConfig { ratio: 1.5, ..Default::default() }), "observability.self_tracing.ratio");
    assert_eq!(bad(SelfTracingConfig { ratio: f64::NAN, ..Default::default() }), "observability.self_tracing.ratio");
    assert_eq!(
        bad(SelfTracingConfig { tenant: "has space".into(), ..Default::default() }),
        "observability.self_tracing.tenant"
    );
    assert_eq!(bad(SelfTracingConfig { queue: 0, ..Default::default() }), "observability.self_tracing.queue");
    assert_eq!(bad(SelfTracingConfig { batch: 10_001, ..Default::default() }), "observability.self_tracing.batch");
    let endpoint = SelfTracingConfig { otlp_endpoint: Some("ftp://collector".into()), ..Default::default() };
    assert_eq!(bad(endpoint), "observability.self_tracing.otlp_endpoint");
    // The server's configuration checks them too.
    let mut config = Config::default();
    config.observability.self_tracing.ratio = -0.5;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("observability.self_tracing.ratio"), "{err}");
}
