//! Handlers of observability (issue 17), with their wire shapes (the exact
//! JSON is in docs/OBSERVABILITY.md):
//!
//! - `GET /api/observability/traces` (`read`): a page of traces, filtered
//!   (time range, model, agent, service, status, minimum duration, text) and
//!   sorted, keyset-paged;
//! - `GET /api/observability/traces/{id}` (`read`): a trace's spans as a
//!   tree flattened depth first, with events and links;
//! - `GET /api/observability/performance` (`read`): model latency
//!   percentiles, tokens per second and error rates per model, agent and
//!   time bucket;
//! - `GET /api/observability/costs` (`read`): costs per day, model and
//!   agent from the catalog's prices, and the 30-day projection;
//! - `GET`/`POST /api/observability/evaluations` (`read`/`write`), `GET
//!   …/evaluations/{id}`, `…/{id}/examples`, `…/compare`: evaluation runs;
//! - `GET /api/observability/metrics` (`admin`): the server's system
//!   metric series, bucketed.
//!
//! `POST /v1/traces` (OTLP ingest) is [`crate::otlp`]. A caller bound to a
//! resource is refused every one of them (403 `resource_bound`):
//! observability covers the whole tenant. With `observability.enabled =
//! false` they are 404.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_domain::observability::{
    CostQuery, DAY_SECS, EvalQuery, Latency, MAX_BUCKET_SECS, MAX_BUCKETS, MAX_COST_DAYS, MAX_METRIC_BUCKET_SECS,
    MIN_BUCKET_SECS, MIN_METRIC_BUCKET_SECS, MetricName, MetricQuery, NANOS_PER_SEC, NewEvalExample, NewEvalRun,
    PerfQuery, PerfStats, Scores, StatusCode as SpanStatusCode, StoredSpan, TraceCursor, TraceQuery, TraceSort,
    TraceSummary, auto_bucket_secs, ns_to_ms, ns_to_time, span_tree, time_to_ns,
};
use memlayer_domain::{DomainError, EvalRunId, Principal, TraceId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, Read, Write};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Adds the observability routes and `POST /v1/traces`.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(crate::otlp::export_traces))
        .routes(routes!(list_traces))
        .routes(routes!(get_trace))
        .routes(routes!(performance))
        .routes(routes!(costs))
        .routes(routes!(create_evaluation, list_evaluations))
        .routes(routes!(compare_evaluations))
        .routes(routes!(get_evaluation))
        .routes(routes!(evaluation_examples))
        .routes(routes!(metrics))
}

/// The principal, refused when bound to a resource.
pub(crate) fn whole_tenant(principal: Principal) -> Result<Principal, ApiError> {
    if principal.resource.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "resource_bound",
            "traces, evaluations and metrics cover the whole tenant: use a credential not bound to a resource",
        ));
    }
    Ok(principal)
}

/// 404 when observability is switched off.
pub(crate) fn enabled(s: &AppState) -> Result<(), ApiError> {
    if s.observability.config().enabled {
        Ok(())
    } else {
        Err(ApiError::not_found("observability is disabled on this server (observability.enabled = false)"))
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn time_ns(ns: i64) -> String {
    rfc3339(ns_to_time(ns))
}

fn day_text(day: i64) -> String {
    ns_to_time(day.saturating_mul(DAY_SECS * NANOS_PER_SEC)).date().to_string()
}

/// `field` as RFC 3339, in nanoseconds clamped to `[0, i64::MAX]`.
fn parse_time(field: &'static str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.filter(|v| !v.is_empty())
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map(|t| time_to_ns(t).max(0))
                .map_err(|e| DomainError::new(field, format!("must be an RFC 3339 time ({e})")).into())
        })
        .transpose()
}

fn now_ns() -> i64 {
    time_to_ns(memlayer_domain::now())
}

/// A bucket width (seconds) for `[from, to)`: the caller's, else about 60
/// buckets; widened to keep at most [`MAX_BUCKETS`].
fn bucket_secs(from: i64, to: i64, asked: Option<i64>, unit: i64, min: i64, max: i64) -> i64 {
    let b = asked.unwrap_or_else(|| auto_bucket_secs(from, to, unit, min)).clamp(min, max);
    let range_secs = (to.saturating_sub(from) / NANOS_PER_SEC).max(1);
    let widest = range_secs / MAX_BUCKETS + i64::from(range_secs % MAX_BUCKETS != 0);
    b.max(widest)
}

// ---------------------------------------------------------------- traces --

/// A trace (see docs/OBSERVABILITY.md, "Traces").
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceDto {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Its root span's name, else its earliest span's.
    pub name: String,
    /// Its root span (16 hex digits); `null` until a root is stored.
    pub root_span_id: Option<String>,
    /// The root's (else earliest span's) resource `service.name`.
    pub service: Option<String>,
    /// RFC 3339, nanoseconds.
    pub start_time: String,
    /// RFC 3339, nanoseconds.
    pub end_time: String,
    /// Milliseconds.
    pub duration_ms: f64,
    /// Spans stored.
    pub span_count: i64,
    /// Spans that failed.
    pub error_count: i64,
    /// `ok`, `error` or `unset`.
    pub status: String,
    /// The first model call's model.
    pub model: Option<String>,
    /// The first `gen_ai.agent.name`.
    pub agent: Option<String>,
    /// Input tokens of its model calls.
    pub input_tokens: i64,
    /// Output tokens of its model calls.
    pub output_tokens: i64,
}

impl From<TraceSummary> for TraceDto {
    fn from(t: TraceSummary) -> Self {
        Self {
            trace_id: t.trace_id.to_hex(),
            duration_ms: ns_to_ms(t.duration_ns()),
            start_time: time_ns(t.start_ns),
            end_time: time_ns(t.end_ns),
            name: t.name,
            root_span_id: t.root_span_id.map(|s| s.to_hex()),
            service: t.service,
            span_count: t.span_count,
            error_count: t.error_count,
            status: t.status.as_str().to_owned(),
            model: t.model,
            agent: t.agent,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
        }
    }
}

/// A page of traces.
#[derive(Debug, Serialize, ToSchema)]
pub struct TracesDto {
    /// In the listing's order.
    pub items: Vec<TraceDto>,
    /// Pass as `cursor` for the next page (with the same filters); `null` on the last.
    /// With `q`, `service` or status `ok`/`unset` (not indexed), a page looks
    /// into at most 1,000 traces, so one before the last may hold fewer than
    /// `limit` traces, even none.
    pub next_cursor: Option<String>,
}

/// Query of `GET /api/observability/traces`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TracesQuery {
    /// Traces starting at or after (RFC 3339).
    pub from: Option<String>,
    /// Traces starting before (RFC 3339).
    pub to: Option<String>,
    /// The trace's model (`gen_ai.request.model` of its first model call).
    pub model: Option<String>,
    /// The trace's agent (`gen_ai.agent.name`).
    pub agent: Option<String>,
    /// The trace's `service.name` (not indexed: see `next_cursor`).
    pub service: Option<String>,
    /// `ok`, `error` or `unset` (`ok` and `unset` are not indexed: see `next_cursor`).
    pub status: Option<String>,
    /// At least this long (milliseconds, 0 to 86,400,000).
    pub min_duration_ms: Option<f64>,
    /// A case-sensitive substring of a span's name or attributes' JSON text
    /// (not indexed: see `next_cursor`).
    pub q: Option<String>,
    /// `-start_time` (default), `start_time`, `-duration`, `duration`.
    pub sort: Option<String>,
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl TracesQuery {
    fn into_query(self) -> Result<Option<TraceQuery>, ApiError> {
        let from_ns = parse_time("from", self.from.as_deref())?;
        let to_ns = parse_time("to", self.to.as_deref())?;
        if let (Some(f), Some(t)) = (from_ns, to_ns)
            && f >= t
        {
            return Ok(None);
        }
        let min_duration_ns = self
            .min_duration_ms
            .map(|ms| {
                if ms.is_finite() && (0.0..=86_400_000.0).contains(&ms) {
                    #[allow(clippy::cast_possible_truncation, reason = "bounded just above")]
                    Ok((ms * 1e6).round() as i64)
                } else {
                    Err(DomainError::new("min_duration_ms", "must be a number between 0 and 86400000"))
                }
            })
            .transpose()?;
        let query = TraceQuery {
            from_ns,
            to_ns,
            model: self.model,
            agent: self.agent,
            service: self.service,
            status: self.status.map(|s| SpanStatusCode::parse(&s)).transpose()?,
            min_duration_ns,
            text: self.q,
            sort: self.sort.map(|s| TraceSort::parse(&s)).transpose()?.unwrap_or_default(),
            limit: self.limit.unwrap_or(50),
            after: None,
        };
        query.validate()?;
        let query = match non_empty(self.cursor) {
            Some(c) => query.resume(&TraceCursor::decode(&c)?)?,
            None => query,
        };
        Ok(Some(query))
    }
}

/// List the tenant's traces (see docs/OBSERVABILITY.md).
#[utoipa::path(get, path = "/api/observability/traces", security(("bearer" = ["read"])), tag = "observability",
    params(TracesQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = TracesDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_traces(
    State(s): State<AppState>,
    Read(principal): Read,
    Query(q): Query<TracesQuery>,
) -> Result<Json<TracesDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let Some(query) = q.into_query()? else { return Ok(Json(TracesDto { items: vec![], next_cursor: None })) };
    let page = s.observability.list_traces(&p.tenant, &query).await?;
    Ok(Json(TracesDto {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// A span's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanStatusDto {
    /// `unset`, `ok` or `error`.
    pub code: String,
    /// Its description.
    pub message: Option<String>,
}

/// An instrumentation scope.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanScopeDto {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What a span says by the GenAI semantic conventions.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenAiDto {
    /// The model called: set on model calls only.
    pub model: Option<String>,
    /// `gen_ai.agent.name`.
    pub agent: Option<String>,
    /// `gen_ai.operation.name`.
    pub operation: Option<String>,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<i64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<i64>,
    /// Time to the first token, milliseconds.
    pub time_to_first_token_ms: Option<f64>,
}

/// An event of a span.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanEventDto {
    /// Its name.
    pub name: String,
    /// RFC 3339, nanoseconds.
    pub time: String,
    /// Its attributes.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Attributes the sender or the limits dropped.
    pub dropped_attributes_count: u32,
}

/// A link of a span.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanLinkDto {
    /// The linked trace.
    pub trace_id: String,
    /// The linked span.
    pub span_id: String,
    /// Its trace state.
    pub trace_state: Option<String>,
    /// Its attributes.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Attributes the sender or the limits dropped.
    pub dropped_attributes_count: u32,
}

/// A span in its trace's tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanDto {
    /// 16 hex digits.
    pub span_id: String,
    /// Its parent; `null` for a root.
    pub parent_span_id: Option<String>,
    /// Its name.
    pub name: String,
    /// `unspecified`, `internal`, `server`, `client`, `producer`, `consumer`.
    pub kind: String,
    /// RFC 3339, nanoseconds.
    pub start_time: String,
    /// RFC 3339, nanoseconds.
    pub end_time: String,
    /// Milliseconds.
    pub duration_ms: f64,
    /// Its status.
    pub status: SpanStatusDto,
    /// Its attributes (OTLP values as JSON).
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Its resource's attributes.
    #[schema(value_type = Object)]
    pub resource: Map<String, Value>,
    /// Its instrumentation scope.
    pub scope: Option<SpanScopeDto>,
    /// W3C trace state.
    pub trace_state: Option<String>,
    /// 0 for a root or an orphan, else its parent's plus one.
    pub depth: u32,
    /// Its parent is not stored.
    pub orphan: bool,
    /// Attributes the sender or the limits dropped.
    pub dropped_attributes_count: u32,
    /// Events the sender or the limits dropped.
    pub dropped_events_count: u32,
    /// Links the sender or the limits dropped.
    pub dropped_links_count: u32,
    /// Strings cut to `observability.max_attribute_bytes`.
    pub truncated_attributes: u32,
    /// What it says by the GenAI conventions; `null` when nothing.
    pub gen_ai: Option<GenAiDto>,
    /// Its events, in time order.
    pub events: Vec<SpanEventDto>,
    /// Its links.
    pub links: Vec<SpanLinkDto>,
}

fn span_dto(s: StoredSpan, depth: u32, orphan: bool) -> SpanDto {
    SpanDto {
        span_id: s.span_id.to_hex(),
        parent_span_id: s.parent_span_id.map(|p| p.to_hex()),
        kind: s.kind.as_str().to_owned(),
        start_time: time_ns(s.start_ns),
        end_time: time_ns(s.end_ns),
        duration_ms: ns_to_ms(s.duration_ns()),
        status: SpanStatusDto { code: s.status.code.as_str().to_owned(), message: s.status.message },
        resource: (*s.resource).clone(),
        scope: s.scope.map(|x| SpanScopeDto { name: x.name.clone(), version: x.version.clone() }),
        trace_state: s.trace_state,
        depth,
        orphan,
        dropped_attributes_count: s.dropped_attributes_count,
        dropped_events_count: s.dropped_events_count,
        dropped_links_count: s.dropped_links_count,
        truncated_attributes: s.truncated_attributes,
        gen_ai: s.gen_ai.map(|g| GenAiDto {
            model: g.model,
            agent: g.agent,
            operation: g.operation,
            input_tokens: g.input_tokens,
            output_tokens: g.output_tokens,
            time_to_first_token_ms: g.ttft_ns.map(ns_to_ms),
        }),
        events: s
            .events
            .into_iter()
            .map(|e| SpanEventDto {
                name: e.name,
                time: time_ns(e.time_ns),
                attributes: e.attributes,
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        links: s
            .links
            .into_iter()
            .map(|l| SpanLinkDto {
                trace_id: l.trace_id.to_hex(),
                span_id: l.span_id.to_hex(),
                trace_state: l.trace_state,
                attributes: l.attributes,
                dropped_attributes_count: l.dropped_attributes_count,
            })
            .collect(),
        name: s.name,
        attributes: s.attributes,
    }
}

/// A trace with its spans.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceDetailDto {
    /// The trace.
    pub trace: TraceDto,
    /// Its spans depth first (children by start time, then span id).
    pub spans: Vec<SpanDto>,
    /// Spans whose parent is not stored.
    pub orphans: usize,
    /// It has more spans than `observability.max_trace_spans`.
    pub truncated: bool,
}

/// A trace of the tenant with its spans as a tree (see docs/OBSERVABILITY.md).
#[utoipa::path(get, path = "/api/observability/traces/{id}", security(("bearer" = ["read"])), tag = "observability",
    params(("id" = String, Path, description = "The trace id: 32 hex digits"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = TraceDetailDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_trace(
    State(s): State<AppState>,
    Read(principal): Read,
    Path(id): Path<String>,
) -> Result<Json<TraceDetailDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    // Thirty-two zeros are well-formed but no span can carry them: 404.
    if id.len() == 32 && id.bytes().all(|b| b == b'0') {
        return Err(ApiError::not_found("trace not found"));
    }
    let id = TraceId::parse_hex("id", &id)?;
    let detail = s.observability.trace(&p.tenant, id).await?;
    let tree = span_tree(&detail.spans);
    let orphans = tree.iter().filter(|n| n.orphan).count();
    let mut spans: Vec<Option<StoredSpan>> = detail.spans.into_iter().map(Some).collect();
    let spans =
        tree.into_iter().filter_map(|n| spans[n.index].take().map(|s| span_dto(s, n.depth, n.orphan))).collect();
    Ok(Json(TraceDetailDto { trace: detail.summary.into(), spans, orphans, truncated: detail.truncated }))
}

// ----------------------------------------------------------- performance --

/// Latency or time-to-first-token percentiles, milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyDto {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

impl From<Latency> for LatencyDto {
    fn from(l: Latency) -> Self {
        Self { p50: l.p50, p90: l.p90, p95: l.p95, p99: l.p99, max: l.max }
    }
}

/// What a set of model calls did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PerfStatsDto {
    /// Calls.
    pub calls: u64,
    /// Calls that failed (status error or `error.type`).
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Nearest-rank percentiles of the calls' durations.
    pub latency_ms: Option<LatencyDto>,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Output tokens over the summed duration of the calls reporting them.
    pub tokens_per_second: Option<f64>,
    /// Of the calls reporting it.
    pub time_to_first_token_ms: Option<LatencyDto>,
}

impl From<PerfStats> for PerfStatsDto {
    fn from(s: PerfStats) -> Self {
        Self {
            calls: s.calls,
            errors: s.errors,
            error_rate: s.error_rate,
            latency_ms: s.latency_ms.map(Into::into),
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            tokens_per_second: s.tokens_per_second,
            time_to_first_token_ms: s.time_to_first_token_ms.map(Into::into),
        }
    }
}

/// One time bucket of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct PerfBucketDto {
    /// RFC 3339: `from` plus a whole number of buckets.
    pub start: String,
    /// Calls.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Nearest-rank percentiles of the calls' durations.
    pub latency_ms: Option<LatencyDto>,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Output tokens over the summed duration of the calls reporting them.
    pub tokens_per_second: Option<f64>,
    /// Of the calls reporting it.
    pub time_to_first_token_ms: Option<LatencyDto>,
}

/// The buckets of one model and agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct PerfSeriesDto {
    /// The model.
    pub model: String,
    /// The agent; `null` for calls of no agent.
    pub agent: Option<String>,
    /// Buckets with calls, oldest first.
    pub buckets: Vec<PerfBucketDto>,
    /// Every call of the series.
    pub total: PerfStatsDto,
}

/// Model performance.
#[derive(Debug, Serialize, ToSchema)]
pub struct PerformanceDto {
    /// RFC 3339.
    pub from: String,
    /// RFC 3339.
    pub to: String,
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// Per model and agent, by model then agent.
    pub series: Vec<PerfSeriesDto>,
    /// Model calls read.
    pub spans_scanned: usize,
    /// The range held more than `observability.max_scan_spans` calls.
    pub truncated: bool,
}

/// Query of `GET /api/observability/performance`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PerformanceQuery {
    /// RFC 3339; default 24 hours before `to`.
    pub from: Option<String>,
    /// RFC 3339; default now.
    pub to: Option<String>,
    /// Bucket width in seconds (60 to 2,592,000); default about 60 buckets.
    /// Widened to keep at most 10,000 buckets.
    pub bucket_secs: Option<i64>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this `gen_ai.operation.name`.
    pub operation: Option<String>,
}

/// Latency percentiles, tokens per second and error rates per model and
/// agent over time buckets, from model-call spans (see docs/OBSERVABILITY.md).
#[utoipa::path(get, path = "/api/observability/performance", security(("bearer" = ["read"])), tag = "observability",
    params(PerformanceQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = PerformanceDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn performance(
    State(s): State<AppState>,
    Read(principal): Read,
    Query(q): Query<PerformanceQuery>,
) -> Result<Json<PerformanceDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let to_ns = parse_time("to", q.to.as_deref())?.unwrap_or_else(now_ns);
    let from_ns = parse_time("from", q.from.as_deref())?.unwrap_or_else(|| (to_ns - DAY_SECS * NANOS_PER_SEC).max(0));
    let secs = bucket_secs(from_ns, to_ns, q.bucket_secs, 60, MIN_BUCKET_SECS, MAX_BUCKET_SECS);
    let query = PerfQuery {
        from_ns,
        to_ns,
        bucket_ns: secs * NANOS_PER_SEC,
        model: non_empty(q.model),
        agent: non_empty(q.agent),
        operation: non_empty(q.operation),
        max_calls: 0,
    };
    let report = s.observability.performance(&p.tenant, query).await?;
    let series = report
        .series
        .into_iter()
        .map(|series| PerfSeriesDto {
            model: series.model,
            agent: series.agent,
            buckets: series
                .buckets
                .into_iter()
                .map(|b| {
                    let st = PerfStatsDto::from(b.stats);
                    PerfBucketDto {
                        start: time_ns(b.start_ns),
                        calls: st.calls,
                        errors: st.errors,
                        error_rate: st.error_rate,
                        latency_ms: st.latency_ms,
                        input_tokens: st.input_tokens,
                        output_tokens: st.output_tokens,
                        tokens_per_second: st.tokens_per_second,
                        time_to_first_token_ms: st.time_to_first_token_ms,
                    }
                })
                .collect(),
            total: series.total.into(),
        })
        .collect();
    Ok(Json(PerformanceDto {
        from: time_ns(from_ns),
        to: time_ns(to_ns),
        bucket_secs: secs,
        series,
        spans_scanned: report.spans_scanned,
        truncated: report.truncated,
    }))
}

// ----------------------------------------------------------------- costs --

/// Usage of one model by one agent on one day.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostRowDto {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The model.
    pub model: String,
    /// The agent; `null` for calls of no agent.
    pub agent: Option<String>,
    /// Calls.
    pub calls: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// `null` when the model is not in the catalog.
    pub cost: Option<f64>,
}

/// One day's totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostDayDto {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Cost of the priced calls.
    pub cost: f64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Calls.
    pub calls: i64,
}

/// One model's totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCostDto {
    /// The model.
    pub model: String,
    /// Per million input tokens (the catalog's); `null` when not in the catalog.
    pub input_price: Option<f64>,
    /// Per million output tokens.
    pub output_price: Option<f64>,
    /// Calls.
    pub calls: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// `null` when not priced.
    pub cost: Option<f64>,
}

/// The range's totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostTotalDto {
    /// Calls.
    pub calls: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cost of the priced calls.
    pub cost: f64,
}

/// One projected day.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectedDayDto {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Its projected cost (never negative).
    pub cost: f64,
}

/// The projection of the next days' costs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionDto {
    /// `linear_least_squares`.
    pub method: String,
    /// Days of the range the line was fitted on (its last 14 at most).
    pub basis_days: usize,
    /// Days projected (30).
    pub horizon_days: usize,
    /// The line's slope per day.
    pub slope_per_day: f64,
    /// The line's value on the first basis day.
    pub intercept: f64,
    /// The projected days' sum.
    pub total: f64,
    /// Each projected day, from `to`.
    pub daily: Vec<ProjectedDayDto>,
}

/// Costs.
#[derive(Debug, Serialize, ToSchema)]
pub struct CostsDto {
    /// RFC 3339, a UTC midnight.
    pub from: String,
    /// RFC 3339, a UTC midnight (exclusive).
    pub to: String,
    /// Per day, model and agent.
    pub rows: Vec<CostRowDto>,
    /// Every day of the range.
    pub daily: Vec<CostDayDto>,
    /// Per model, by name.
    pub by_model: Vec<ModelCostDto>,
    /// The range's totals.
    pub total: CostTotalDto,
    /// Models used but not in the catalog (their calls have no cost).
    pub unpriced_models: Vec<String>,
    /// The next 30 days.
    pub projection: ProjectionDto,
}

/// Query of `GET /api/observability/costs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CostsQuery {
    /// RFC 3339, rounded down to its UTC day; default 30 days before `to`.
    pub from: Option<String>,
    /// RFC 3339, rounded up to a UTC day; default the end of today. At most
    /// 3,660 days after `from` (a longer range is narrowed to its last 3,660 days).
    pub to: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
}

/// Costs per day, model and agent from the catalog's per-million-token
/// prices, with a 30-day projection (see docs/OBSERVABILITY.md).
#[utoipa::path(get, path = "/api/observability/costs", security(("bearer" = ["read"])), tag = "observability",
    params(CostsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = CostsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn costs(
    State(s): State<AppState>,
    Read(principal): Read,
    Query(q): Query<CostsQuery>,
) -> Result<Json<CostsDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let day_ns = DAY_SECS * NANOS_PER_SEC;
    let to_day = match parse_time("to", q.to.as_deref())? {
        Some(t) => t / day_ns + i64::from(t % day_ns != 0),
        None => now_ns() / day_ns + 1,
    };
    let from_day = parse_time("from", q.from.as_deref())?.map_or(to_day - 30, |f| f / day_ns);
    let from_day = from_day.max(to_day - MAX_COST_DAYS);
    let query = CostQuery { from_day, to_day, model: non_empty(q.model), agent: non_empty(q.agent) };
    let r = s.observability.costs(&p.tenant, &query).await?;
    let total = CostTotalDto {
        calls: r.daily.iter().map(|d| d.calls).sum(),
        input_tokens: r.daily.iter().map(|d| d.input_tokens).sum(),
        output_tokens: r.daily.iter().map(|d| d.output_tokens).sum(),
        cost: r.daily.iter().map(|d| d.cost).sum(),
    };
    let projection = ProjectionDto {
        method: "linear_least_squares".into(),
        basis_days: r.projection.basis_days,
        horizon_days: r.projection.daily.len(),
        slope_per_day: r.projection.slope_per_day,
        intercept: r.projection.intercept,
        total: r.projection.total,
        daily: r
            .projection
            .daily
            .iter()
            .zip(r.to_day..)
            .map(|(cost, day)| ProjectedDayDto { day: day_text(day), cost: *cost })
            .collect(),
    };
    Ok(Json(CostsDto {
        from: time_ns(r.from_day.saturating_mul(day_ns)),
        to: time_ns(r.to_day.saturating_mul(day_ns)),
        rows: r
            .rows
            .into_iter()
            .map(|(u, cost)| CostRowDto {
                day: day_text(u.day),
                model: u.model,
                agent: u.agent,
                calls: u.calls,
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cost,
            })
            .collect(),
        daily: r
            .daily
            .into_iter()
            .map(|d| CostDayDto {
                day: day_text(d.day),
                cost: d.cost,
                input_tokens: d.input_tokens,
                output_tokens: d.output_tokens,
                calls: d.calls,
            })
            .collect(),
        by_model: r
            .by_model
            .into_iter()
            .map(|m| ModelCostDto {
                input_price: m.price.map(|p| p.input),
                output_price: m.price.map(|p| p.output),
                model: m.model,
                calls: m.calls,
                input_tokens: m.input_tokens,
                output_tokens: m.output_tokens,
                cost: m.cost,
            })
            .collect(),
        total,
        unpriced_models: r.unpriced_models,
        projection,
    }))
}

// ----------------------------------------------------------- evaluations --

/// One example of a run, as posted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalExampleBody {
    /// What was asked (any JSON).
    #[schema(value_type = Object)]
    pub input: Value,
    /// What was expected (any JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub expected: Option<Value>,
    /// What came back (any JSON).
    #[schema(value_type = Object)]
    pub output: Value,
    /// Per-example scores: name → number.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub scores: Map<String, Value>,
}

/// An evaluation run, as posted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRunBody {
    /// A name for the run.
    pub name: Option<String>,
    /// The model evaluated (this or `agent`, or both).
    pub model: Option<String>,
    /// The agent evaluated.
    pub agent: Option<String>,
    /// The dataset's name.
    pub dataset: String,
    /// When it ran (RFC 3339); default now.
    pub at: Option<String>,
    /// Metrics: name → number.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
    /// Its examples (at most 1,000).
    #[serde(default)]
    pub examples: Vec<EvalExampleBody>,
    /// Free-form metadata (an object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// `map` as scores, naming `field.<name>` when a value is not a number.
fn scores(field: &'static str, map: Map<String, Value>) -> Result<Scores, ApiError> {
    let mut out = Scores::new();
    for (k, v) in map {
        let Some(f) = v.as_f64() else {
            let shown: String = k.chars().take(64).collect();
            let found: String = v.to_string().chars().take(64).collect();
            return Err(ApiError::invalid(format!("{field}.{shown}: must be a number, found {found}")));
        };
        out.insert(k, f);
    }
    Ok(out)
}

impl EvalRunBody {
    fn into_new(self) -> Result<NewEvalRun, ApiError> {
        let at = match self.at.filter(|a| !a.is_empty()) {
            Some(a) => OffsetDateTime::parse(&a, &Rfc3339)
                .map_err(|e| DomainError::new("at", format!("must be an RFC 3339 time ({e})")))?,
            None => memlayer_domain::now(),
        };
        let examples = self
            .examples
            .into_iter()
            .map(|e| {
                Ok(NewEvalExample {
                    input: e.input,
                    expected: e.expected,
                    output: e.output,
                    scores: scores("examples.scores", e.scores)?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let run = NewEvalRun {
            name: self.name,
            model: self.model,
            agent: self.agent,
            dataset: self.dataset,
            at,
            metrics: scores("metrics", self.metrics)?,
            examples,
            metadata: self.metadata,
        };
        run.validate()?;
        Ok(run)
    }
}

/// A stored evaluation run.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalRunDto {
    /// UUID.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// The model evaluated.
    pub model: Option<String>,
    /// The agent evaluated.
    pub agent: Option<String>,
    /// The dataset.
    pub dataset: String,
    /// When it ran (RFC 3339).
    pub at: String,
    /// Metrics: name → number.
    #[schema(value_type = Object)]
    pub metrics: BTreeMap<String, f64>,
    /// Examples it holds.
    pub example_count: u32,
    /// Its metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When it was recorded (RFC 3339).
    pub created_at: String,
}

impl From<memlayer_domain::observability::EvalRun> for EvalRunDto {
    fn from(r: memlayer_domain::observability::EvalRun) -> Self {
        Self {
            id: r.id.to_string(),
            name: r.name,
            model: r.model,
            agent: r.agent,
            dataset: r.dataset,
            at: rfc3339(r.at),
            metrics: r.metrics,
            example_count: r.example_count,
            metadata: r.metadata,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalRunsDto {
    /// Newest `at` first.
    pub items: Vec<EvalRunDto>,
    /// A previous page's cursor; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Record an evaluation run with its metrics and examples (see docs/OBSERVABILITY.md).
#[utoipa::path(post, path = "/api/observability/evaluations", security(("bearer" = ["write"])), tag = "observability",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = EvalRunBody,
    responses((status = 201, body = EvalRunDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_evaluation(
    State(s): State<AppState>,
    Write(principal): Write,
    Json(body): Json<EvalRunBody>,
) -> Result<(StatusCode, Json<EvalRunDto>), ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let run = body.into_new()?;
    Ok((StatusCode::CREATED, Json(s.observability.create_eval_run(&p.tenant, run).await?.into())))
}

/// Query of `GET /api/observability/evaluations`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EvalsQuery {
    /// Only this model.
    pub model: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this dataset.
    pub dataset: Option<String>,
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The tenant's evaluation runs, newest first.
#[utoipa::path(get, path = "/api/observability/evaluations", security(("bearer" = ["read"])), tag = "observability",
    params(EvalsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = EvalRunsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_evaluations(
    State(s): State<AppState>,
    Read(principal): Read,
    Query(q): Query<EvalsQuery>,
) -> Result<Json<EvalRunsDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let query = EvalQuery {
        model: non_empty(q.model),
        agent: non_empty(q.agent),
        dataset: non_empty(q.dataset),
        limit: q.limit.unwrap_or(50),
        after: None,
    };
    let query = match non_empty(q.cursor) {
        Some(c) => query.resume(&c)?,
        None => query,
    };
    let page = s.observability.list_eval_runs(&p.tenant, &query).await?;
    Ok(Json(EvalRunsDto { items: page.items.into_iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}

fn run_id(id: &str) -> Result<EvalRunId, ApiError> {
    Ok(id.parse::<EvalRunId>()?)
}

/// An evaluation run.
#[utoipa::path(get, path = "/api/observability/evaluations/{id}", security(("bearer" = ["read"])), tag = "observability",
    params(("id" = String, Path, description = "The run's id (UUID)"),
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = EvalRunDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_evaluation(
    State(s): State<AppState>,
    Read(principal): Read,
    Path(id): Path<String>,
) -> Result<Json<EvalRunDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    Ok(Json(s.observability.get_eval_run(&p.tenant, run_id(&id)?).await?.into()))
}

/// An example of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalExampleDto {
    /// Its place in the run, from 0.
    pub index: u32,
    /// What was asked.
    #[schema(value_type = Object)]
    pub input: Value,
    /// What was expected.
    #[schema(value_type = Option<Object>)]
    pub expected: Option<Value>,
    /// What came back.
    #[schema(value_type = Object)]
    pub output: Value,
    /// Its scores.
    #[schema(value_type = Object)]
    pub scores: BTreeMap<String, f64>,
}

/// A page of examples.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalExamplesDto {
    /// In the order posted.
    pub items: Vec<EvalExampleDto>,
    /// A previous page's cursor; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Query of an examples page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExamplesQuery {
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A run's examples, a page at a time.
#[utoipa::path(get, path = "/api/observability/evaluations/{id}/examples", security(("bearer" = ["read"])), tag = "observability",
    params(("id" = String, Path, description = "The run's id (UUID)"), ExamplesQuery,
           ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = EvalExamplesDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn evaluation_examples(
    State(s): State<AppState>,
    Read(principal): Read,
    Path(id): Path<String>,
    Query(q): Query<ExamplesQuery>,
) -> Result<Json<EvalExamplesDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let id = run_id(&id)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(DomainError::new("limit", "must be between 1 and 1000").into());
    }
    let after = non_empty(q.cursor)
        .map(|c| c.parse::<u32>().map_err(|_| DomainError::new("cursor", "is not a cursor of this listing")))
        .transpose()?;
    let mut items = s.observability.eval_examples(&p.tenant, id, after, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.index.to_string())
    } else {
        None
    };
    let items = items
        .into_iter()
        .map(|e| EvalExampleDto {
            index: e.index,
            input: e.input,
            expected: e.expected,
            output: e.output,
            scores: e.scores,
        })
        .collect();
    Ok(Json(EvalExamplesDto { items, next_cursor }))
}

/// One metric across compared runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricCompareDto {
    /// The metric.
    pub name: String,
    /// Each run's value, in `runs`' order; `null` where a run lacks it.
    pub values: Vec<Option<f64>>,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

/// Runs side by side.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalCompareDto {
    /// The runs.
    pub runs: Vec<EvalRunDto>,
    /// Every metric of any run, by name.
    pub metrics: Vec<MetricCompareDto>,
}

/// Query of the comparison: exactly one of `ids` and `dataset`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CompareQuery {
    /// 2 to 20 run ids, comma-separated, compared in that order.
    pub ids: Option<String>,
    /// Or: the newest run of each model and agent on this dataset (at most 20).
    pub dataset: Option<String>,
}

/// Evaluation runs side by side: named ones, or the newest of each model
/// and agent on a dataset.
#[utoipa::path(get, path = "/api/observability/evaluations/compare", security(("bearer" = ["read"])), tag = "observability",
    params(CompareQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = EvalCompareDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn compare_evaluations(
    State(s): State<AppState>,
    Read(principal): Read,
    Query(q): Query<CompareQuery>,
) -> Result<Json<EvalCompareDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let ids = non_empty(q.ids)
        .map(|ids| {
            ids.split(',')
                .map(|id| id.trim().parse::<EvalRunId>().map_err(|e| DomainError::new("ids", e.reason)))
                .collect()
        })
        .transpose()?;
    let c = s.observability.compare(&p.tenant, ids, non_empty(q.dataset).as_deref()).await?;
    Ok(Json(EvalCompareDto {
        runs: c.runs.into_iter().map(Into::into).collect(),
        metrics: c
            .metrics
            .into_iter()
            .map(|m| MetricCompareDto { name: m.name, values: m.values, min: m.min, max: m.max })
            .collect(),
    }))
}

// --------------------------------------------------------------- metrics --

/// One bucket of samples.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricPointDto {
    /// RFC 3339: `from` plus a whole number of buckets.
    pub start: String,
    /// Mean.
    pub avg: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Samples in the bucket.
    pub samples: i64,
}

/// One metric of one server.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricSeriesDto {
    /// The metric (see docs/OBSERVABILITY.md).
    pub name: String,
    /// Its unit (UCUM).
    pub unit: String,
    /// The server that sampled it.
    pub instance: String,
    /// Buckets with samples, oldest first.
    pub points: Vec<MetricPointDto>,
}

/// System metric series.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsDto {
    /// RFC 3339.
    pub from: String,
    /// RFC 3339.
    pub to: String,
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// By name, then instance.
    pub series: Vec<MetricSeriesDto>,
}

/// Query of `GET /api/observability/metrics` (documentation; the handler
/// reads the pairs itself, since `name` repeats).
#[allow(dead_code, reason = "read by utoipa only; the handler parses the raw pairs")]
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// A metric name, repeatable; default every name.
    pub name: Option<Vec<String>>,
    /// RFC 3339; default an hour before `to`.
    pub from: Option<String>,
    /// RFC 3339; default now.
    pub to: Option<String>,
    /// Bucket width in seconds (1 to 86,400); default about 60 buckets.
    /// Widened to keep at most 10,000 buckets.
    pub bucket_secs: Option<i64>,
}

/// The server's system metric series, bucketed (see docs/OBSERVABILITY.md).
#[utoipa::path(get, path = "/api/observability/metrics", security(("bearer" = ["admin"])), tag = "observability",
    params(MetricsQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, body = MetricsDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn metrics(
    State(s): State<AppState>,
    Admin(principal): Admin,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<MetricsDto>, ApiError> {
    let p = whole_tenant(principal)?;
    enabled(&s)?;
    let (mut names, mut from, mut to, mut bucket) = (Vec::new(), None, None, None);
    for (k, v) in pairs {
        match k.as_str() {
            "name" => names.push(MetricName::parse(&v)?),
            "from" => from = Some(v),
            "to" => to = Some(v),
            "bucket_secs" => {
                let n: i64 =
                    v.parse().map_err(|_| DomainError::new("bucket_secs", format!("`{v}` is not a whole number")))?;
                bucket = Some(n);
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{shown}`; expected name, from, to, bucket_secs"
                )));
            }
        }
    }
    let to_ns = parse_time("to", to.as_deref())?.unwrap_or_else(now_ns);
    let from_ns = parse_time("from", from.as_deref())?.unwrap_or_else(|| (to_ns - 3_600 * NANOS_PER_SEC).max(0));
    let secs = bucket_secs(from_ns, to_ns, bucket, 1, MIN_METRIC_BUCKET_SECS, MAX_METRIC_BUCKET_SECS);
    let series = if from_ns < to_ns {
        let query = MetricQuery { names, from_ns, to_ns, bucket_ns: secs * NANOS_PER_SEC };
        s.observability.metric_series(&p.tenant, &query).await?
    } else {
        Vec::new()
    };
    Ok(Json(MetricsDto {
        from: time_ns(from_ns),
        to: time_ns(to_ns),
        bucket_secs: secs,
        series: series
            .into_iter()
            .map(|m| MetricSeriesDto {
                name: m.name.as_str().to_owned(),
                unit: m.name.unit().to_owned(),
                instance: m.instance,
                points: m
                    .points
                    .into_iter()
                    .map(|pt| MetricPointDto {
                        start: time_ns(pt.start_ns),
                        avg: pt.avg,
                        min: pt.min,
                        max: pt.max,
                        samples: pt.samples,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

// -------------------------------------------------------------- document --

/// Parameter schemas of the observability routes (see `openapi.rs`).
pub(crate) fn parameter_schema(path: &str, name: &str, location: &str) -> Option<Value> {
    if !path.starts_with("/api/observability/") {
        return None;
    }
    let text = json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000]*$"});
    let time = json!({"type": "string", "format": "date-time"});
    Some(match (location, name) {
        ("path", "id") if path.starts_with("/api/observability/traces/") => {
            json!({"type": "string", "pattern": "^[0-9a-fA-F]{32}$", "minLength": 32, "maxLength": 32})
        }
        ("query", "from" | "to") => time,
        ("query", "service" | "q" | "operation" | "dataset") => text,
        ("query", "agent") => text,
        ("query", "status") => json!({"type": "string", "enum": ["ok", "error", "unset"]}),
        ("query", "sort") => json!({"type": "string", "enum": TraceSort::ALL.map(TraceSort::as_str)}),
        ("query", "min_duration_ms") => json!({"type": "number", "minimum": 0, "maximum": 86_400_000}),
        ("query", "bucket_secs") if path.ends_with("/metrics") => {
            json!({"type": "integer", "minimum": MIN_METRIC_BUCKET_SECS, "maximum": MAX_METRIC_BUCKET_SECS})
        }
        ("query", "bucket_secs") => json!({"type": "integer", "minimum": MIN_BUCKET_SECS, "maximum": MAX_BUCKET_SECS}),
        ("query", "name") => json!({"type": "array", "items": {"type": "string",
            "enum": MetricName::ALL.map(MetricName::as_str)}}),
        ("query", "ids") => {
            let uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
            json!({"type": "string", "pattern": format!("^{uuid}(,{uuid}){{1,19}}$"),
                   "description": "2 to 20 run ids, comma-separated; give this or `dataset`, not both"})
        }
        _ => return None,
    })
}

/// The OTLP/JSON schema of `POST /v1/traces` and the evaluation body's
/// rules JSON Schema can state, completed in the derived document.
pub(crate) fn complete_document(doc: &mut Value) {
    let name = json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000]*$"});
    let scores = json!({"type": "object", "maxProperties": 100,
        "propertyNames": {"minLength": 1, "maxLength": 128, "pattern": "^[^\\u0000]*$"},
        "additionalProperties": {"type": "number"}});
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        if let Some(body) = schemas.get_mut("EvalRunBody").and_then(|b| b.get_mut("properties")) {
            for field in ["name", "model", "agent", "dataset"] {
                let mut s = name.clone();
                if field != "dataset" {
                    s = json!({"oneOf": [s, {"type": "null"}]});
                }
                body[field] = s;
            }
            body["at"] = json!({"oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]});
        }
        if let Some(body) = schemas.get_mut("EvalRunBody").and_then(Value::as_object_mut) {
            body.insert(
                "anyOf".into(),
                json!([{"required": ["model"], "properties": {"model": {"type": "string"}}},
                       {"required": ["agent"], "properties": {"agent": {"type": "string"}}}]),
            );
        }
        if let Some(body) = schemas.get_mut("EvalRunBody").and_then(|b| b.get_mut("properties")) {
            body["metrics"] = scores.clone();
            body["examples"]["maxItems"] = json!(1000);
        }
        if let Some(example) = schemas.get_mut("EvalExampleBody").and_then(|b| b.get_mut("properties")) {
            example["scores"] = scores;
            for field in ["input", "output"] {
                example[field] = json!({});
            }
            example["expected"] = json!({});
        }
        schemas.extend(otlp_schemas());
    }
    if let Some(content) = doc.pointer_mut("/paths/~1v1~1traces/post/requestBody/content")
        && let Some(content) = content.as_object_mut()
    {
        content
            .insert("application/json".into(), json!({"schema": {"$ref": "#/components/schemas/OtlpTracesRequest"}}));
        content.insert("application/x-protobuf".into(), json!({"schema": {"type": "string", "format": "binary"}}));
    }
    if let Some(ok) = doc.pointer_mut("/paths/~1v1~1traces/post/responses/200/content/application~1x-protobuf") {
        ok["schema"] = json!({"type": "string", "format": "binary"});
    }
}

/// OTLP/JSON's `ExportTraceServiceRequest` as JSON Schema (the fields
/// memlayer reads; others are ignored, as the specification says).
fn otlp_schemas() -> Map<String, Value> {
    let uint32 = json!({"type": "integer", "minimum": 0, "maximum": 4_294_967_295_u64});
    let nanos = json!({"oneOf": [{"type": "string", "pattern": "^[0-9]{1,19}$"},
                                 {"type": "integer", "minimum": 0, "maximum": i64::MAX}]});
    let attributes = json!({"type": "array", "items": {"$ref": "#/components/schemas/OtlpKeyValue"}});
    let hex = |n: usize| json!({"type": "string", "pattern": format!("^[0-9a-fA-F]{{{n}}}$")});
    let mut m = Map::new();
    m.insert(
        "OtlpTracesRequest".into(),
        json!({"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest",
               "properties": {"resourceSpans": {"type": "array", "items": {"$ref": "#/components/schemas/OtlpResourceSpans"}}}}),
    );
    m.insert(
        "OtlpResourceSpans".into(),
        json!({"type": "object", "properties": {
            "resource": {"type": "object", "properties": {"attributes": attributes, "droppedAttributesCount": uint32}},
            "scopeSpans": {"type": "array", "items": {"$ref": "#/components/schemas/OtlpScopeSpans"}},
            "schemaUrl": {"type": "string"}}}),
    );
    m.insert(
        "OtlpScopeSpans".into(),
        json!({"type": "object", "properties": {
            "scope": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                      "attributes": attributes, "droppedAttributesCount": uint32}},
            "spans": {"type": "array", "items": {"$ref": "#/components/schemas/OtlpSpan"}},
            "schemaUrl": {"type": "string"}}}),
    );
    m.insert(
        "OtlpSpan".into(),
        json!({"type": "object", "properties": {
            "traceId": hex(32), "spanId": hex(16),
            "parentSpanId": {"type": "string", "pattern": "^([0-9a-fA-F]{16})?$"},
            "traceState": {"type": "string"}, "flags": uint32, "name": {"type": "string"},
            "kind": {"type": "integer", "minimum": 0, "maximum": 5},
            "startTimeUnixNano": nanos, "endTimeUnixNano": nanos,
            "attributes": attributes, "droppedAttributesCount": uint32,
            "events": {"type": "array", "items": {"type": "object", "properties": {
                "timeUnixNano": nanos, "name": {"type": "string"}, "attributes": attributes,
                "droppedAttributesCount": uint32}}},
            "droppedEventsCount": uint32,
            "links": {"type": "array", "items": {"type": "object", "properties": {
                "traceId": hex(32), "spanId": hex(16), "traceState": {"type": "string"},
                "attributes": attributes, "droppedAttributesCount": uint32, "flags": uint32}}},
            "droppedLinksCount": uint32,
            "status": {"type": "object", "properties": {"message": {"type": "string"},
                       "code": {"type": "integer", "minimum": 0, "maximum": 2}}}}}),
    );
    m.insert(
        "OtlpKeyValue".into(),
        json!({"type": "object", "required": ["key"], "properties": {
            "key": {"type": "string"}, "value": {"$ref": "#/components/schemas/OtlpAnyValue"}}}),
    );
    m.insert(
        "OtlpAnyValue".into(),
        json!({"type": "object", "maxProperties": 1, "properties": {
            "stringValue": {"type": "string"}, "boolValue": {"type": "boolean"},
            "intValue": {"oneOf": [{"type": "string", "pattern": "^-?[0-9]{1,18}$"},
                                   {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}]},
            "doubleValue": {"type": "number"},
            "arrayValue": {"type": "object", "properties": {"values": {"type": "array",
                "items": {"$ref": "#/components/schemas/OtlpAnyValue"}}}},
            "kvlistValue": {"type": "object", "properties": {"values": {"type": "array",
                "items": {"$ref": "#/components/schemas/OtlpKeyValue"}}}},
            "bytesValue": {"type": "string",
                "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$",
                "description": "Canonical base64 (RFC 4648: padded, unused bits zero)"}}}),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_widened_to_stay_within_the_limit() {
        let day = DAY_SECS * NANOS_PER_SEC;
        assert_eq!(bucket_secs(0, day, None, 60, 60, MAX_BUCKET_SECS), 1440);
        assert_eq!(bucket_secs(0, day, Some(60), 60, 60, MAX_BUCKET_SECS), 60);
        assert_eq!(bucket_secs(0, day, Some(5), 60, 60, MAX_BUCKET_SECS), 60, "at least the minimum");
        let long = bucket_secs(0, 1000 * day, Some(60), 60, 60, MAX_BUCKET_SECS);
        assert_eq!(long, 8640, "1000 days in at most 10,000 buckets");
        assert_eq!(day_text(20_000), "2024-10-04");
    }

    #[test]
    fn a_metric_that_is_not_a_number_is_named() {
        let mut m = Map::new();
        m.insert("accuracy".into(), json!("high"));
        let e = scores("metrics", m).unwrap_err();
        assert_eq!(e.message(), "metrics.accuracy: must be a number, found \"high\"");
    }
}
