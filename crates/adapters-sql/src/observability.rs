//! The whole `ObservabilityStore` (migrations 21 and 26), written once for
//! both engines over the tables `table.rs` describes (`obs_traces`,
//! `obs_spans`, `obs_links`, `obs_eval_runs`, `obs_eval_examples`,
//! `obs_metrics`).
//!
//! - An ingest is one write transaction: the spans, each with its events as
//!   a JSON array in its row, by multi-row `INSERT … ON CONFLICT DO NOTHING
//!   RETURNING` (so a span already stored is skipped and the statement says
//!   which were new), the new spans' links, then one multi-row upsert of
//!   their traces' summaries whose `SET` spells `TraceSummary::merge` in
//!   SQL. Every statement (JSON text included) is built before the write
//!   takes the writer.
//! - Listings are keyset on `(sort key, trace_id)` through the indexes of
//!   migrations 21 and 26 (`(tenant, start_ns, trace_id)`, `(tenant,
//!   duration_ns, trace_id)`, per model and agent, and the failed traces).
//!   The filters no index serves (the text, an `EXISTS` over the trace's
//!   spans; the service; a status other than `error`) look into at most
//!   `MAX_TEXT_SCAN_TRACES` traces a page (found by the walked index alone)
//!   and continue after them by cursor.
//! - Model calls are read through the partial covering index of the spans
//!   with a model; usage is grouped per day in SQL.
//! - Retention deletes whole traces whose last span ended before the
//!   cutoff, with their spans and links, in one transaction per batch,
//!   across tenants (each tenant's through its start index); metric
//!   samples by time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use memlayer_domain::observability::{
    Attributes, CostQuery, EvalExample, EvalQuery, EvalRun, GenAi, MAX_TEXT_SCAN_TRACES, MetricName, MetricPoint,
    MetricQuery, MetricSample, MetricSeries, ModelCall, NewEvalRun, NewSpan, PerfQuery, Scope, Scores, SpanEvent,
    SpanId, SpanKind, SpanLink, SpanStatus, StatusCode, TraceCursor, TraceDetail, TraceId, TraceQuery, TraceSummary,
    UsageRow,
};
use memlayer_domain::{DomainError, EvalRunId, Page, TenantId, from_micros, now, to_micros};
use memlayer_ports::{IngestReport, MAX_INGEST_SPANS, ModelCalls, StoreError, StoreGauges};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::table::{OBS_EVAL_EXAMPLES, OBS_EVAL_RUNS, OBS_LINKS, OBS_METRICS, OBS_SPANS, OBS_TRACES};
use crate::{Cells, Dialect, Sql, SqlValue, Transactor, corrupt};

/// Spans per insert statement (27 parameters each, the tenant and 26
/// columns: within both engines' parameter limits).
const SPAN_CHUNK: usize = 400;
/// Links, traces or examples per insert statement.
const ROW_CHUNK: usize = 500;
/// Nanoseconds in a day.
const DAY_NS: i64 = 86_400_000_000_000;

fn span_key(id: SpanId) -> i64 {
    i64::from_be_bytes(*id.as_bytes())
}

fn span_id(table: &'static str, column: &'static str, key: i64) -> Result<SpanId, StoreError> {
    SpanId::from_bytes(column, &key.to_be_bytes()).map_err(|e| corrupt(table, column, e))
}

fn trace_uuid(id: TraceId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

fn trace_id(c: &Cells<&[SqlValue]>, idx: usize, table: &'static str) -> Result<TraceId, StoreError> {
    let u = c.uuid(idx, "trace_id")?;
    TraceId::from_bytes("trace_id", u.as_bytes()).map_err(|e| corrupt(table, "trace_id", e))
}

/// A JSON column's value: on SQLite, which stores JSON as text, the text
/// itself, serialised without building a document first (and before a
/// write takes the writer); on Postgres the document, bound as `jsonb`.
fn json(d: Dialect, value: &impl Serialize) -> SqlValue {
    let bound = match d {
        Dialect::Sqlite => serde_json::to_string(value).map(SqlValue::Text),
        Dialect::Postgres => serde_json::to_value(value).map(SqlValue::Json),
    };
    // Maps and arrays of JSON values with string keys always serialise.
    bound.unwrap_or(SqlValue::Null)
}

fn count(n: u32) -> SqlValue {
    SqlValue::Int(i64::from(n))
}

/// A span event as its span's `events` array holds it (migration 26).
#[derive(Serialize)]
struct EventOut<'a> {
    time_ns: i64,
    name: &'a str,
    attributes: &'a Attributes,
    dropped_attributes: u32,
}

/// [`EventOut`] read back.
#[derive(Deserialize)]
struct EventIn {
    time_ns: i64,
    name: String,
    attributes: Attributes,
    dropped_attributes: u32,
}

/// The `events` column of `events`: `NULL` for none, else the array.
fn events_json(d: Dialect, events: &[SpanEvent]) -> SqlValue {
    if events.is_empty() {
        return SqlValue::Null;
    }
    let out: Vec<EventOut<'_>> = events
        .iter()
        .map(|e| EventOut {
            time_ns: e.time_ns,
            name: &e.name,
            attributes: &e.attributes,
            dropped_attributes: e.dropped_attributes_count,
        })
        .collect();
    json(d, &out)
}

fn span_row(d: Dialect, s: &NewSpan, resource: &SqlValue) -> Vec<SqlValue> {
    let g = s.gen_ai.as_ref();
    vec![
        trace_uuid(s.trace_id).into(),
        span_key(s.span_id).into(),
        s.parent_span_id.map(span_key).into(),
        s.name.clone().into(),
        s.kind.as_str().into(),
        s.start_ns.into(),
        s.end_ns.into(),
        s.status.code.as_str().into(),
        s.status.message.clone().into(),
        s.trace_state.clone().into(),
        json(d, &s.attributes),
        resource.clone(),
        s.scope.as_ref().map(|x| x.name.clone()).into(),
        s.scope.as_ref().map(|x| x.version.clone()).into(),
        count(s.dropped_attributes_count),
        count(s.dropped_events_count),
        count(s.dropped_links_count),
        count(s.truncated_attributes),
        g.and_then(|g| g.model.clone()).into(),
        g.and_then(|g| g.agent.clone()).into(),
        g.and_then(|g| g.operation.clone()).into(),
        g.and_then(|g| g.input_tokens).into(),
        g.and_then(|g| g.output_tokens).into(),
        g.and_then(|g| g.ttft_ns).into(),
        s.is_error().into(),
        events_json(d, &s.events),
    ]
}

fn opt_text(v: Option<&str>) -> SqlValue {
    v.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_owned()))
}

fn trace_row(t: &TraceSummary) -> Vec<SqlValue> {
    vec![
        trace_uuid(t.trace_id).into(),
        t.name.clone().into(),
        t.root_span_id.map(span_key).into(),
        opt_text(t.service.as_deref()),
        t.root_status.as_str().into(),
        t.status.as_str().into(),
        t.start_ns.into(),
        t.end_ns.into(),
        t.duration_ns().into(),
        t.span_count.into(),
        t.error_count.into(),
        opt_text(t.model.as_deref()),
        opt_text(t.agent.as_deref()),
        t.input_tokens.into(),
        t.output_tokens.into(),
    ]
}

/// The upsert's `ON CONFLICT` clause: [`TraceSummary::merge`] in SQL (every
/// right-hand side reads the row as it was, in both engines).
fn merge_clause(d: Dialect) -> String {
    let head = |column: &str| {
        format!(
            "CASE WHEN obs_traces.root_span_id IS NOT NULL THEN obs_traces.{column} \
             WHEN excluded.root_span_id IS NOT NULL THEN excluded.{column} \
             WHEN excluded.start_ns < obs_traces.start_ns THEN excluded.{column} ELSE obs_traces.{column} END"
        )
    };
    let start = d.least("obs_traces.start_ns", "excluded.start_ns");
    let end = d.greatest("obs_traces.end_ns", "excluded.end_ns");
    format!(
        " ON CONFLICT (tenant, trace_id) DO UPDATE SET name = {name}, service = {service}, root_status = {root_status}, \
         status = CASE WHEN obs_traces.error_count + excluded.error_count > 0 THEN 'error' ELSE {root_status} END, \
         root_span_id = coalesce(obs_traces.root_span_id, excluded.root_span_id), \
         start_ns = {start}, end_ns = {end}, duration_ns = {end} - {start}, \
         span_count = obs_traces.span_count + excluded.span_count, \
         error_count = obs_traces.error_count + excluded.error_count, \
         model = coalesce(obs_traces.model, excluded.model), agent = coalesce(obs_traces.agent, excluded.agent), \
         input_tokens = obs_traces.input_tokens + excluded.input_tokens, \
         output_tokens = obs_traces.output_tokens + excluded.output_tokens",
        name = head("name"),
        service = head("service"),
        root_status = head("root_status"),
    )
}

/// `ObservabilityStore::ingest`.
///
/// The statements are built before the write takes the writer (on libSQL,
/// one connection every write queues for): rows, JSON text and SQL of the
/// spans, and of the events, links and trace upserts as they are when every
/// span is new. Inside the write only a batch whose insert skipped stored
/// spans builds the rest again, for the spans it stored.
///
/// # Errors
/// `Invalid` past [`MAX_INGEST_SPANS`]; a failed write (nothing stored).
pub async fn ingest<D: Transactor>(db: &D, tenant: &TenantId, spans: Vec<NewSpan>) -> Result<IngestReport, StoreError> {
    if spans.len() > MAX_INGEST_SPANS {
        return Err(DomainError::new("spans", format!("at most {MAX_INGEST_SPANS} per call")).into());
    }
    if spans.is_empty() {
        return Ok(IngestReport::default());
    }
    let total = spans.len();
    // A span repeated within the batch is stored once (its first copy).
    let mut seen = HashSet::with_capacity(spans.len());
    let spans: Vec<NewSpan> = spans.into_iter().filter(|s| seen.insert((s.trace_id, s.span_id))).collect();
    let dialect = db.dialect();
    let owner = tenant.clone();
    let inserts = span_inserts(dialect, tenant.as_str(), &spans);
    let rest = after_spans(dialect, tenant.as_str(), &spans);
    let stored = db
        .write(
            tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    let mut new = HashSet::with_capacity(spans.len());
                    for sql in inserts {
                        for row in ex.fetch("insert spans", sql).await? {
                            let c = Cells::new(&row, "obs_spans");
                            new.insert((trace_id(&c, 0, "obs_spans")?, c.int(1, "span_id")?));
                        }
                    }
                    let rest = if new.len() == spans.len() {
                        rest
                    } else {
                        let stored: Vec<NewSpan> =
                            spans.into_iter().filter(|s| new.contains(&(s.trace_id, span_key(s.span_id)))).collect();
                        after_spans(dialect, owner.as_str(), &stored)
                    };
                    for (context, sql) in rest {
                        ex.execute(context, sql).await?;
                    }
                    Ok(new.len())
                })
            }),
        )
        .await?;
    Ok(IngestReport { stored, duplicates: total - stored })
}

/// The multi-row inserts of `spans` that skip a span already stored and
/// return the keys of those they stored.
fn span_inserts(d: Dialect, tenant: &str, spans: &[NewSpan]) -> Vec<Sql> {
    // Each resource serialised once for its spans.
    let mut resources: HashMap<usize, SqlValue> = HashMap::new();
    spans
        .chunks(SPAN_CHUNK)
        .map(|chunk| {
            let rows = chunk.iter().map(|s| {
                let r =
                    resources.entry(Arc::as_ptr(&s.resource).addr()).or_insert_with(|| json(d, s.resource.as_ref()));
                span_row(d, s, r)
            });
            let mut sql = Sql::new(d).dynamic();
            OBS_SPANS.insert_rows(&mut sql, Some(tenant), rows);
            sql.push(" ON CONFLICT (tenant, trace_id, span_id) DO NOTHING RETURNING trace_id, span_id");
            sql
        })
        .collect()
}

/// What follows the spans' insert for `stored` (the spans it stored): their
/// links, then one multi-row upsert of their traces' summaries whose `SET`
/// spells `TraceSummary::merge` in SQL.
fn after_spans(d: Dialect, tenant: &str, stored: &[NewSpan]) -> Vec<(&'static str, Sql)> {
    let mut out = links(d, tenant, stored);
    let merge = merge_clause(d);
    for chunk in TraceSummary::of_batch(stored).chunks(ROW_CHUNK) {
        let mut sql = Sql::new(d).dynamic();
        OBS_TRACES.insert_rows(&mut sql, Some(tenant), chunk.iter().map(trace_row));
        sql.push(&merge);
        out.push(("upsert traces", sql));
    }
    out
}

fn links(d: Dialect, tenant: &str, spans: &[NewSpan]) -> Vec<(&'static str, Sql)> {
    let mut out = Vec::new();
    let links: Vec<Vec<SqlValue>> = spans
        .iter()
        .flat_map(|s| {
            s.links.iter().enumerate().map(move |(i, l)| {
                vec![
                    trace_uuid(s.trace_id).into(),
                    span_key(s.span_id).into(),
                    SqlValue::Int(i64::try_from(i).unwrap_or(i64::MAX)),
                    trace_uuid(l.trace_id).into(),
                    span_key(l.span_id).into(),
                    l.trace_state.clone().into(),
                    json(d, &l.attributes),
                    count(l.dropped_attributes_count),
                ]
            })
        })
        .collect();
    for chunk in links.chunks(ROW_CHUNK) {
        let mut sql = Sql::new(d).dynamic();
        OBS_LINKS.insert_rows(&mut sql, Some(tenant), chunk.iter().cloned());
        out.push(("insert span links", sql));
    }
    out
}

fn status(
    c: &Cells<&[SqlValue]>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> Result<StatusCode, StoreError> {
    StatusCode::parse(&c.text(idx, column)?).map_err(|e| corrupt(table, column, e))
}

fn decode_trace(row: &[SqlValue]) -> Result<TraceSummary, StoreError> {
    let c = Cells::new(row, "obs_traces");
    Ok(TraceSummary {
        trace_id: trace_id(&c, 0, "obs_traces")?,
        name: c.text(1, "name")?,
        root_span_id: c.opt_int(2, "root_span_id")?.map(|k| span_id("obs_traces", "root_span_id", k)).transpose()?,
        service: c.opt_text(3, "service")?,
        root_status: status(&c, 4, "obs_traces", "root_status")?,
        status: status(&c, 5, "obs_traces", "status")?,
        start_ns: c.int(6, "start_ns")?,
        end_ns: c.int(7, "end_ns")?,
        span_count: c.int(9, "span_count")?,
        error_count: c.int(10, "error_count")?,
        model: c.opt_text(11, "model")?,
        agent: c.opt_text(12, "agent")?,
        input_tokens: c.int(13, "input_tokens")?,
        output_tokens: c.int(14, "output_tokens")?,
    })
}

fn u32_of(c: &Cells<&[SqlValue]>, idx: usize, column: &'static str) -> Result<u32, StoreError> {
    c.u32(idx, column)
}

fn decode_span(row: &[SqlValue]) -> Result<NewSpan, StoreError> {
    const T: &str = "obs_spans";
    let c = Cells::new(row, T);
    let scope = match (c.opt_text(12, "scope_name")?, c.opt_text(13, "scope_version")?) {
        (None, None) => None,
        (name, version) => {
            Some(Arc::new(Scope { name: name.unwrap_or_default(), version: version.unwrap_or_default() }))
        }
    };
    let attributes: Attributes = c.json(10, "attributes")?;
    let model = c.opt_text(18, "model")?;
    let gen_ai = GenAi {
        model,
        agent: c.opt_text(19, "agent")?,
        operation: c.opt_text(20, "operation")?,
        input_tokens: c.opt_int(21, "input_tokens")?,
        output_tokens: c.opt_int(22, "output_tokens")?,
        ttft_ns: c.opt_int(23, "ttft_ns")?,
    };
    Ok(NewSpan {
        trace_id: trace_id(&c, 0, T)?,
        span_id: span_id(T, "span_id", c.int(1, "span_id")?)?,
        parent_span_id: c.opt_int(2, "parent_span_id")?.map(|k| span_id(T, "parent_span_id", k)).transpose()?,
        name: c.text(3, "name")?,
        kind: SpanKind::parse(&c.text(4, "kind")?).map_err(|e| corrupt(T, "kind", e))?,
        start_ns: c.int(5, "start_ns")?,
        end_ns: c.int(6, "end_ns")?,
        status: SpanStatus { code: status(&c, 7, T, "status_code")?, message: c.opt_text(8, "status_message")? },
        trace_state: c.opt_text(9, "trace_state")?,
        attributes,
        resource: Arc::new(c.json(11, "resource")?),
        scope,
        events: decode_events(&c)?,
        links: Vec::new(),
        dropped_attributes_count: u32_of(&c, 14, "dropped_attributes")?,
        dropped_events_count: u32_of(&c, 15, "dropped_events")?,
        dropped_links_count: u32_of(&c, 16, "dropped_links")?,
        truncated_attributes: u32_of(&c, 17, "truncated_attributes")?,
        gen_ai: (gen_ai != GenAi::default()).then_some(gen_ai),
    })
}

/// A span's events from its `events` column, earliest first (in the order
/// sent among equal times).
fn decode_events(c: &Cells<&[SqlValue]>) -> Result<Vec<SpanEvent>, StoreError> {
    let stored: Option<Vec<EventIn>> = c.opt_json(25, "events")?;
    let mut events: Vec<SpanEvent> = stored
        .unwrap_or_default()
        .into_iter()
        .map(|e| SpanEvent {
            time_ns: e.time_ns,
            name: e.name,
            attributes: e.attributes,
            dropped_attributes_count: e.dropped_attributes,
        })
        .collect();
    events.sort_by_key(|e| e.time_ns);
    Ok(events)
}

/// The listing statement of `query` (validated): the tenant's traces
/// matching its filters, in its order, after its position, one more than
/// its limit.
///
/// How it stays flat as data grows: sorted by start time, a model or agent
/// filter walks its `(tenant, column, start_ns, trace_id)` index, the
/// status `error` the partial index of failed traces, otherwise `(tenant,
/// start_ns, trace_id)`; sorted by duration, `(tenant, duration_ns,
/// trace_id)`. Either way the walk starts at the cursor's position (a
/// bound the cursor implies is left out, so the engine cannot prefer it)
/// and the other filters apply as it goes. On SQLite, which plans without
/// statistics, the filters that must not choose the index are written
/// `+column` (an expression no index serves). The filters no index serves
/// ([`windowed`]) are bounded by the caller ([`scan_window_sql`]).
#[must_use]
pub fn list_traces_sql(d: Dialect, tenant: &TenantId, query: &TraceQuery) -> Sql {
    traces_sql(d, tenant, query, None, None, i64::from(query.limit) + 1)
}

/// [`list_traces_sql`] with `window` bounding the walk on its far side
/// (inclusive: a text search's page stops at the last trace of its scan
/// window), `select` the column list (`None`: every column of the trace)
/// and `limit` rows.
fn traces_sql(
    d: Dialect,
    tenant: &TenantId,
    query: &TraceQuery,
    window: Option<(i64, TraceId)>,
    select: Option<&str>,
    limit: i64,
) -> Sql {
    let by_duration = query.sort.by_duration();
    let col = |name: &str, drives: bool| match d {
        Dialect::Sqlite if !drives => format!("+t.{name}"),
        _ => format!("t.{name}"),
    };
    let mut sql = Sql::new(d).dynamic();
    let columns = select.map_or_else(|| OBS_TRACES.column_list(Some("t")), str::to_owned);
    sql.push(&format!("SELECT {columns} FROM obs_traces t WHERE t.tenant = "));
    sql.bind(tenant.as_str());
    // A cursor of this listing already implies the bound on its own key.
    let resumed = query.after.is_some();
    let (asc, desc) = (resumed && !query.sort.descending(), resumed && query.sort.descending());
    if let Some(f) = query.from_ns.filter(|_| by_duration || !asc) {
        sql.push(&format!(" AND {} >= ", col("start_ns", !by_duration))).bind(f);
    }
    if let Some(to) = query.to_ns.filter(|_| by_duration || !desc) {
        sql.push(&format!(" AND {} < ", col("start_ns", !by_duration))).bind(to);
    }
    let mut equality = !by_duration;
    for (column, v) in [("model", query.model.as_deref()), ("agent", query.agent.as_deref())] {
        if let Some(v) = v {
            // The first indexed equality filter may drive the walk (sorted by start).
            sql.push(&format!(" AND {} = ", col(column, std::mem::take(&mut equality)))).bind(v);
        }
    }
    match query.status {
        // Written as the partial index's own condition, which a bound
        // parameter would not let either engine match.
        Some(StatusCode::Error) => {
            sql.push(&format!(" AND {} = 'error'", col("status", std::mem::take(&mut equality))));
        }
        Some(other) => {
            sql.push(&format!(" AND {} = ", col("status", false))).bind(other.as_str());
        }
        None => {}
    }
    if let Some(service) = &query.service {
        sql.push(&format!(" AND {} = ", col("service", false))).bind(service.as_str());
    }
    if let Some(min) = query.min_duration_ns.filter(|_| !(by_duration && asc)) {
        sql.push(&format!(" AND {} >= ", col("duration_ns", by_duration))).bind(min);
    }
    if let Some(text) = &query.text {
        let p = sql.arg(text.as_str());
        sql.push(&format!(
            " AND EXISTS (SELECT 1 FROM obs_spans s WHERE s.tenant = t.tenant AND s.trace_id = t.trace_id AND ({} OR {}))",
            d.contains("s.name", &p),
            d.contains(&d.json_text("s.attributes"), &p)
        ));
    }
    let key = if by_duration { "t.duration_ns" } else { "t.start_ns" };
    let (cmp, dir) = if query.sort.descending() { ("<", "DESC") } else { (">", "ASC") };
    if let Some((k, id)) = query.after {
        sql.push(&format!(" AND ({key}, t.trace_id) {cmp} (")).bind(k).push(", ").bind(trace_uuid(id)).push(")");
    }
    if let Some((k, id)) = window {
        let far = if query.sort.descending() { ">=" } else { "<=" };
        sql.push(&format!(" AND ({key}, t.trace_id) {far} (")).bind(k).push(", ").bind(trace_uuid(id)).push(")");
    }
    sql.push(&format!(" ORDER BY {key} {dir}, t.trace_id {dir} LIMIT ")).bind(limit);
    sql
}

/// Whether `query` has a filter no index serves: the text, the service, or
/// a status other than `error`. A page of such a listing looks into at
/// most [`MAX_TEXT_SCAN_TRACES`] traces ([`scan_window_sql`]).
#[must_use]
pub fn windowed(query: &TraceQuery) -> bool {
    query.text.is_some() || query.service.is_some() || query.status.is_some_and(|s| s != StatusCode::Error)
}

/// The scan window of a [`windowed`] listing's page: the sort key and id of
/// the [`MAX_TEXT_SCAN_TRACES`]-th trace the indexed filters admit from the
/// page's position, read from the walked index alone.
#[must_use]
pub fn scan_window_sql(d: Dialect, tenant: &TenantId, query: &TraceQuery) -> Sql {
    let indexed = TraceQuery {
        text: None,
        service: None,
        status: query.status.filter(|s| *s == StatusCode::Error),
        ..query.clone()
    };
    let key = if query.sort.by_duration() { "t.duration_ns" } else { "t.start_ns" };
    traces_sql(d, tenant, &indexed, None, Some(&format!("{key}, t.trace_id")), i64::from(MAX_TEXT_SCAN_TRACES))
}

/// `ObservabilityStore::list_traces`.
///
/// # Errors
/// `Invalid` for a query [`TraceQuery::validate`] refuses; a failed read.
pub async fn list_traces<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    query: &TraceQuery,
) -> Result<Page<TraceSummary, TraceCursor>, StoreError> {
    query.validate()?;
    let d = db.dialect();
    let (owner, q) = (tenant.clone(), query.clone());
    let (rows, window) = db
        .read(
            tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    // A filter no index serves looks into at most MAX_TEXT_SCAN_TRACES traces a page.
                    let mut window = None;
                    if windowed(&q) {
                        let keys = ex.fetch("bound an unindexed filter", scan_window_sql(d, &owner, &q)).await?;
                        if keys.len() >= MAX_TEXT_SCAN_TRACES as usize
                            && let Some(last) = keys.last()
                        {
                            let c = Cells::new(last, "obs_traces");
                            window = Some((c.int(0, "key")?, trace_id(&c, 1, "obs_traces")?));
                        }
                    }
                    let sql = traces_sql(d, &owner, &q, window, None, i64::from(q.limit) + 1);
                    Ok((ex.fetch("list traces", sql).await?, window))
                })
            }),
        )
        .await?;
    let mut items = rows.iter().map(|r| decode_trace(r)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > query.limit as usize {
        items.truncate(query.limit as usize);
        items.last().map(|last| query.cursor_after(last))
    } else {
        // A page cut by its scan window continues after it.
        window.map(|(key, id)| query.cursor_at(key, id))
    };
    Ok(Page { items, next_cursor })
}

/// `ObservabilityStore::trace`.
///
/// # Errors
/// `NotFound`; a failed read.
pub async fn trace<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    id: TraceId,
    max_spans: u32,
) -> Result<TraceDetail, StoreError> {
    let d = db.dialect();
    let key = trace_uuid(id);
    let mut head = Sql::new(d);
    head.push(&format!("SELECT {} FROM obs_traces WHERE tenant = ", OBS_TRACES.column_list(None)));
    head.bind(tenant.as_str()).push(" AND trace_id = ").bind(key);
    let mut spans = Sql::new(d);
    spans.push(&format!("SELECT {} FROM obs_spans WHERE tenant = ", OBS_SPANS.column_list(None)));
    spans.bind(tenant.as_str()).push(" AND trace_id = ").bind(key);
    spans.push(" ORDER BY start_ns, span_id LIMIT ").bind(i64::from(max_spans) + 1);
    let mut links = Sql::new(d);
    links.push("SELECT span_id, idx, linked_trace_id, linked_span_id, trace_state, attributes, dropped_attributes ");
    links.push("FROM obs_links WHERE tenant = ").bind(tenant.as_str()).push(" AND trace_id = ").bind(key);
    links.push(" ORDER BY span_id, idx");
    let (head, spans, links) = db
        .read(
            tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    let head = ex.fetch_one("read trace", head).await?;
                    if head.is_none() {
                        return Ok((None, vec![], vec![]));
                    }
                    Ok((head, ex.fetch("read trace spans", spans).await?, ex.fetch("read span links", links).await?))
                })
            }),
        )
        .await?;
    let summary = decode_trace(&head.ok_or_else(|| StoreError::not_found("trace", id))?)?;
    let mut spans = spans.iter().map(|r| decode_span(r)).collect::<Result<Vec<_>, _>>()?;
    let truncated = spans.len() > max_spans as usize;
    spans.truncate(max_spans as usize);
    let at: HashMap<i64, usize> = spans.iter().enumerate().map(|(i, s)| (span_key(s.span_id), i)).collect();
    for row in &links {
        let c = Cells::new(row, "obs_links");
        let Some(&i) = at.get(&c.int(0, "span_id")?) else { continue };
        let linked = c.uuid(2, "linked_trace_id")?;
        spans[i].links.push(SpanLink {
            trace_id: TraceId::from_bytes("linked_trace_id", linked.as_bytes())
                .map_err(|e| corrupt("obs_links", "linked_trace_id", e))?,
            span_id: span_id("obs_links", "linked_span_id", c.int(3, "linked_span_id")?)?,
            trace_state: c.opt_text(4, "trace_state")?,
            attributes: c.json(5, "attributes")?,
            dropped_attributes_count: c.u32(6, "dropped_attributes")?,
        });
    }
    Ok(TraceDetail { summary, spans, truncated })
}

/// The filters shared by model calls and usage: the tenant's model calls
/// starting in `[from, to)` (spans `s` joined to their traces `t`).
fn push_calls(sql: &mut Sql, tenant: &TenantId, from_ns: i64, to_ns: i64, model: Option<&str>, agent: Option<&str>) {
    sql.push(" FROM obs_spans s LEFT JOIN obs_traces t ON t.tenant = s.tenant AND t.trace_id = s.trace_id");
    sql.push(" WHERE s.tenant = ").bind(tenant.as_str()).push(" AND s.model IS NOT NULL AND s.start_ns >= ");
    sql.bind(from_ns).push(" AND s.start_ns < ").bind(to_ns);
    if let Some(m) = model {
        sql.push(" AND s.model = ").bind(m);
    }
    if let Some(a) = agent {
        sql.push(" AND coalesce(s.agent, t.agent) = ").bind(a);
    }
}

/// The model calls statement of `query`: one more than its `max_calls`.
#[must_use]
pub fn model_calls_sql(d: Dialect, tenant: &TenantId, query: &PerfQuery) -> Sql {
    let mut sql = Sql::new(d).dynamic();
    sql.push("SELECT s.start_ns, s.end_ns, s.model, coalesce(s.agent, t.agent), s.input_tokens, s.output_tokens, ");
    sql.push("s.ttft_ns, s.error");
    push_calls(&mut sql, tenant, query.from_ns, query.to_ns, query.model.as_deref(), query.agent.as_deref());
    if let Some(o) = &query.operation {
        sql.push(" AND s.operation = ").bind(o.as_str());
    }
    sql.push(" ORDER BY s.start_ns LIMIT ").bind(i64::from(query.max_calls) + 1);
    sql
}

/// `ObservabilityStore::model_calls`.
///
/// # Errors
/// A failed read.
pub async fn model_calls<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    query: &PerfQuery,
) -> Result<ModelCalls, StoreError> {
    let sql = model_calls_sql(db.dialect(), tenant, query);
    let rows = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("read model calls", sql)))).await?;
    let truncated = rows.len() > query.max_calls as usize;
    let calls = rows
        .iter()
        .take(query.max_calls as usize)
        .map(|row| {
            let c = Cells::new(row, "obs_spans");
            let start_ns = c.int(0, "start_ns")?;
            Ok(ModelCall {
                start_ns,
                duration_ns: c.int(1, "end_ns")? - start_ns,
                model: c.text(2, "model")?,
                agent: c.opt_text(3, "agent")?,
                input_tokens: c.opt_int(4, "input_tokens")?,
                output_tokens: c.opt_int(5, "output_tokens")?,
                ttft_ns: c.opt_int(6, "ttft_ns")?,
                error: c.bool(7, "error")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ModelCalls { calls, truncated })
}

/// `ObservabilityStore::daily_usage`.
///
/// # Errors
/// `Invalid` for a range [`CostQuery::validate`] refuses; a failed read.
pub async fn daily_usage<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    query: &CostQuery,
) -> Result<Vec<UsageRow>, StoreError> {
    query.validate()?;
    let (from_ns, to_ns) = (query.from_day.saturating_mul(DAY_NS), query.to_day.saturating_mul(DAY_NS));
    let mut sql = Sql::new(db.dialect()).dynamic();
    sql.push("SELECT s.start_ns / ").bind(DAY_NS).push(", s.model, coalesce(s.agent, t.agent), count(*), ");
    sql.push("CAST(coalesce(sum(s.input_tokens), 0) AS BIGINT), CAST(coalesce(sum(s.output_tokens), 0) AS BIGINT)");
    push_calls(&mut sql, tenant, from_ns, to_ns, query.model.as_deref(), query.agent.as_deref());
    sql.push(" GROUP BY 1, 2, 3");
    let rows = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("read usage", sql)))).await?;
    let mut out = rows
        .iter()
        .map(|row| {
            let c = Cells::new(row, "obs_spans");
            Ok(UsageRow {
                day: c.int(0, "day")?,
                model: c.text(1, "model")?,
                agent: c.opt_text(2, "agent")?,
                calls: c.int(3, "calls")?,
                input_tokens: c.int(4, "input_tokens")?,
                output_tokens: c.int(5, "output_tokens")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by(|a, b| (a.day, &a.model, &a.agent).cmp(&(b.day, &b.model, &b.agent)));
    Ok(out)
}

fn scores_json(s: &Scores) -> SqlValue {
    SqlValue::Json(Value::Object(s.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect()))
}

fn decode_scores(c: &Cells<&[SqlValue]>, idx: usize, column: &'static str) -> Result<Scores, StoreError> {
    let map: serde_json::Map<String, Value> = c.json(idx, column)?;
    map.into_iter()
        .map(|(k, v)| v.as_f64().map(|f| (k, f)).ok_or_else(|| corrupt("obs_eval", column, "a score is not a number")))
        .collect()
}

fn decode_run(row: &[SqlValue]) -> Result<EvalRun, StoreError> {
    let c = Cells::new(row, "obs_eval_runs");
    Ok(EvalRun {
        id: EvalRunId::from_uuid(c.uuid(0, "id")?),
        name: c.opt_text(1, "name")?,
        model: c.opt_text(2, "model")?,
        agent: c.opt_text(3, "agent")?,
        dataset: c.text(4, "dataset")?,
        at: c.timestamp(5, "at")?,
        metrics: decode_scores(&c, 6, "metrics")?,
        example_count: c.u32(7, "example_count")?,
        metadata: c.json(8, "metadata")?,
        created_at: c.timestamp(9, "created_at")?,
    })
}

/// `ObservabilityStore::create_eval_run`.
///
/// # Errors
/// `Invalid` naming the field; a failed write.
pub async fn create_eval_run<D: Transactor>(db: &D, tenant: &TenantId, run: NewEvalRun) -> Result<EvalRun, StoreError> {
    run.validate()?;
    let d = db.dialect();
    let id = EvalRunId::new();
    let stored = EvalRun {
        id,
        name: run.name,
        model: run.model,
        agent: run.agent,
        dataset: run.dataset,
        at: from_micros(to_micros(run.at)),
        metrics: run.metrics,
        example_count: u32::try_from(run.examples.len()).unwrap_or(u32::MAX),
        metadata: run.metadata,
        created_at: now(),
    };
    let mut head = Sql::new(d);
    OBS_EVAL_RUNS.insert_rows(
        &mut head,
        Some(tenant.as_str()),
        [vec![
            id.as_uuid().into(),
            opt_text(stored.name.as_deref()),
            opt_text(stored.model.as_deref()),
            opt_text(stored.agent.as_deref()),
            stored.dataset.clone().into(),
            stored.at.into(),
            scores_json(&stored.metrics),
            count(stored.example_count),
            SqlValue::Json(Value::Object(stored.metadata.clone())),
            stored.created_at.into(),
        ]],
    );
    let rows: Vec<Vec<SqlValue>> = run
        .examples
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                id.as_uuid().into(),
                SqlValue::Int(i64::try_from(i).unwrap_or(i64::MAX)),
                SqlValue::Json(e.input),
                e.expected.map_or(SqlValue::Null, SqlValue::Json),
                SqlValue::Json(e.output),
                scores_json(&e.scores),
            ]
        })
        .collect();
    let examples: Vec<Sql> = rows
        .chunks(ROW_CHUNK)
        .map(|chunk| {
            let mut sql = Sql::new(d).dynamic();
            OBS_EVAL_EXAMPLES.insert_rows(&mut sql, Some(tenant.as_str()), chunk.iter().cloned());
            sql
        })
        .collect();
    db.write(
        tenant,
        Box::new(move |ex| {
            Box::pin(async move {
                ex.execute("insert evaluation run", head).await?;
                for sql in examples {
                    ex.execute("insert evaluation examples", sql).await?;
                }
                Ok(())
            })
        }),
    )
    .await?;
    Ok(stored)
}

/// `ObservabilityStore::list_eval_runs`.
///
/// # Errors
/// `Invalid` on `limit`; a failed read.
pub async fn list_eval_runs<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    query: &EvalQuery,
) -> Result<Page<EvalRun, String>, StoreError> {
    if !(1..=1000).contains(&query.limit) {
        return Err(DomainError::new("limit", "must be between 1 and 1000").into());
    }
    let mut sql = Sql::new(db.dialect()).dynamic();
    sql.push(&format!("SELECT {} FROM obs_eval_runs WHERE tenant = ", OBS_EVAL_RUNS.column_list(None)));
    sql.bind(tenant.as_str());
    for (column, v) in [("model", &query.model), ("agent", &query.agent), ("dataset", &query.dataset)] {
        if let Some(v) = v {
            sql.push(&format!(" AND {column} = ")).bind(v.as_str());
        }
    }
    if let Some((at, id)) = query.after {
        sql.push(" AND (at, id) < (").bind(from_micros(at)).push(", ").bind(id.as_uuid()).push(")");
    }
    sql.push(" ORDER BY at DESC, id DESC LIMIT ").bind(i64::from(query.limit) + 1);
    let rows = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("list evaluation runs", sql)))).await?;
    let mut items = rows.iter().map(|r| decode_run(r)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > query.limit as usize {
        items.truncate(query.limit as usize);
        items.last().map(|last| query.cursor_after(last))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// `ObservabilityStore::get_eval_run`.
///
/// # Errors
/// `NotFound`; a failed read.
pub async fn get_eval_run<D: Transactor>(db: &D, tenant: &TenantId, id: EvalRunId) -> Result<EvalRun, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push(&format!("SELECT {} FROM obs_eval_runs WHERE tenant = ", OBS_EVAL_RUNS.column_list(None)));
    sql.bind(tenant.as_str()).push(" AND id = ").bind(id.as_uuid());
    let row = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch_one("read evaluation run", sql)))).await?;
    decode_run(&row.ok_or_else(|| StoreError::not_found("evaluation run", id))?)
}

/// `ObservabilityStore::eval_examples`.
///
/// # Errors
/// `NotFound` for a run the tenant does not hold; a failed read.
pub async fn eval_examples<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    id: EvalRunId,
    after: Option<u32>,
    limit: u32,
) -> Result<Vec<EvalExample>, StoreError> {
    let d = db.dialect();
    let mut exists = Sql::new(d);
    exists.push("SELECT 1 FROM obs_eval_runs WHERE tenant = ").bind(tenant.as_str()).push(" AND id = ");
    exists.bind(id.as_uuid());
    let mut sql = Sql::new(d);
    sql.push("SELECT idx, input, expected, output, scores FROM obs_eval_examples WHERE tenant = ");
    sql.bind(tenant.as_str()).push(" AND run_id = ").bind(id.as_uuid()).push(" AND idx > ");
    sql.bind(after.map_or(-1, i64::from)).push(" ORDER BY idx LIMIT ").bind(i64::from(limit));
    let rows = db
        .read(
            tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    if ex.fetch_one("find evaluation run", exists).await?.is_none() {
                        return Ok(None);
                    }
                    ex.fetch("read evaluation examples", sql).await.map(Some)
                })
            }),
        )
        .await?
        .ok_or_else(|| StoreError::not_found("evaluation run", id))?;
    rows.iter()
        .map(|row| {
            let c = Cells::new(row, "obs_eval_examples");
            Ok(EvalExample {
                index: c.u32(0, "idx")?,
                input: c.json(1, "input")?,
                expected: c.opt_json(2, "expected")?,
                output: c.json(3, "output")?,
                scores: decode_scores(&c, 4, "scores")?,
            })
        })
        .collect()
}

/// `ObservabilityStore::latest_eval_runs`.
///
/// # Errors
/// A failed read.
pub async fn latest_eval_runs<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    dataset: &str,
    limit: u32,
) -> Result<Vec<EvalRun>, StoreError> {
    let d = db.dialect();
    let mut sql = Sql::new(d);
    sql.push(&format!("SELECT {} FROM obs_eval_runs r WHERE r.tenant = ", OBS_EVAL_RUNS.column_list(Some("r"))));
    sql.bind(tenant.as_str()).push(" AND r.dataset = ").bind(dataset);
    sql.push(&format!(
        " AND NOT EXISTS (SELECT 1 FROM obs_eval_runs n WHERE n.tenant = r.tenant AND n.dataset = r.dataset \
         AND {} AND {} AND (n.at, n.id) > (r.at, r.id))",
        d.is_same("n.model", "r.model"),
        d.is_same("n.agent", "r.agent"),
    ));
    let rows = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("latest evaluation runs", sql)))).await?;
    let mut runs = rows.iter().map(|r| decode_run(r)).collect::<Result<Vec<_>, _>>()?;
    runs.sort_by(|a, b| (&a.model, &a.agent).cmp(&(&b.model, &b.agent)));
    runs.truncate(limit as usize);
    Ok(runs)
}

/// `ObservabilityStore::record_metrics`.
///
/// # Errors
/// A failed write.
pub async fn record_metrics<D: Transactor>(db: &D, samples: Vec<MetricSample>) -> Result<(), StoreError> {
    if samples.is_empty() {
        return Ok(());
    }
    let d = db.dialect();
    let statements: Vec<Sql> = samples
        .chunks(ROW_CHUNK)
        .map(|chunk| {
            let mut sql = Sql::new(d).dynamic();
            let rows = chunk.iter().map(|s| {
                vec![s.name.as_str().into(), s.instance.clone().into(), s.at_ns.into(), SqlValue::Real(s.value)]
            });
            OBS_METRICS.insert_rows(&mut sql, None, rows);
            sql.push(" ON CONFLICT (name, instance, at_ns) DO NOTHING");
            sql
        })
        .collect();
    db.write_all_tenants(Box::new(move |ex| {
        Box::pin(async move {
            for sql in statements {
                ex.execute("record metrics", sql).await?;
            }
            Ok(())
        })
    }))
    .await
}

/// `ObservabilityStore::metric_series`.
///
/// # Errors
/// `Invalid` for an empty range or bucket; a failed read.
pub async fn metric_series<D: Transactor>(
    db: &D,
    tenant: &TenantId,
    query: &MetricQuery,
) -> Result<Vec<MetricSeries>, StoreError> {
    if query.from_ns >= query.to_ns || query.bucket_ns <= 0 {
        return Err(DomainError::new("from", "must be before `to`, with a positive bucket").into());
    }
    let names: Vec<MetricName> = if query.names.is_empty() { MetricName::ALL.to_vec() } else { query.names.clone() };
    let mut sql = Sql::new(db.dialect()).dynamic();
    sql.push("SELECT name, instance, (at_ns - ").bind(query.from_ns).push(") / ").bind(query.bucket_ns);
    sql.push(", avg(value), min(value), max(value), count(*) FROM obs_metrics WHERE name IN (");
    sql.bind_list(names.iter().map(|n| n.as_str())).push(") AND at_ns >= ").bind(query.from_ns);
    sql.push(" AND at_ns < ").bind(query.to_ns).push(" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    let rows = db.read(tenant, Box::new(move |ex| Box::pin(ex.fetch("read metric series", sql)))).await?;
    let mut out: Vec<MetricSeries> = Vec::new();
    for row in &rows {
        let c = Cells::new(row, "obs_metrics");
        let name = MetricName::parse(&c.text(0, "name")?).map_err(|e| corrupt("obs_metrics", "name", e))?;
        let instance = c.text(1, "instance")?;
        let point = MetricPoint {
            start_ns: query.from_ns + c.int(2, "bucket")? * query.bucket_ns,
            avg: c.real(3, "avg")?,
            min: c.real(4, "min")?,
            max: c.real(5, "max")?,
            samples: c.int(6, "samples")?,
        };
        match out.last_mut() {
            Some(s) if s.name == name && s.instance == instance => s.points.push(point),
            _ => out.push(MetricSeries { name, instance, points: vec![point] }),
        }
    }
    out.sort_by(|a, b| (a.name.as_str(), &a.instance).cmp(&(b.name.as_str(), &b.instance)));
    Ok(out)
}

/// `ObservabilityStore::store_gauges`.
///
/// # Errors
/// A failed read.
pub async fn store_gauges<D: Transactor>(db: &D) -> Result<StoreGauges, StoreError> {
    let d = db.dialect();
    let mut sql = Sql::new(d);
    sql.push(match d {
        Dialect::Sqlite => {
            "SELECT (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()), \
             (SELECT count(*) FROM embedding_jobs) + (SELECT count(*) FROM messages \
             WHERE rowid > (SELECT caught_up_to FROM semantic_watermark))"
        }
        Dialect::Postgres => "SELECT pg_database_size(current_database()), (SELECT count(*) FROM embedding_jobs)",
    });
    let row = db.write_all_tenants(Box::new(move |ex| Box::pin(ex.fetch_one("read store gauges", sql)))).await?;
    let row = row.ok_or_else(|| StoreError::backend("store gauges: no row"))?;
    let c = Cells::new(&row, "gauges");
    Ok(StoreGauges { database_bytes: c.opt_int(0, "database_bytes")?, embedding_queue: c.int(1, "embedding_queue")? })
}

/// The traces a purge deletes: at most `limit` that ended before
/// `before_ns`, in any tenant, as `(tenant, trace_id)` rows. Each tenant's
/// are found through its start index (a trace ends no earlier than it
/// starts, so each started before the cutoff too), the tenants one index
/// step each from the one before.
#[must_use]
pub fn purge_victims_sql(d: Dialect, before_ns: i64, limit: u32) -> Sql {
    let mut sql = Sql::new(d);
    sql.push(
        "WITH RECURSIVE tenants (tenant) AS (SELECT min(tenant) FROM obs_traces UNION ALL \
         SELECT (SELECT min(o.tenant) FROM obs_traces o WHERE o.tenant > tenants.tenant) \
         FROM tenants WHERE tenants.tenant IS NOT NULL) \
         SELECT x.tenant, x.trace_id FROM tenants JOIN obs_traces x ON x.tenant = tenants.tenant \
         WHERE x.start_ns < ",
    );
    sql.bind(before_ns).push(" AND x.end_ns < ").bind(before_ns);
    sql.push(" LIMIT ").bind(i64::from(limit));
    sql
}

/// The deletes of a purge of `victims` (one tenant's trace ids), each with
/// the table it deletes from: links, spans, then the traces, by key.
#[must_use]
pub fn purge_deletes_sql(d: Dialect, tenant: &str, victims: &[Uuid]) -> Vec<(&'static str, Sql)> {
    ["obs_links", "obs_spans", "obs_traces"]
        .into_iter()
        .flat_map(|table| {
            victims.chunks(ROW_CHUNK).map(move |ids| {
                let mut sql = Sql::new(d).dynamic();
                sql.push(&format!("DELETE FROM {table} WHERE tenant = ")).bind(tenant);
                sql.push(" AND trace_id IN (").bind_list(ids.iter().copied()).push(")");
                (table, sql)
            })
        })
        .collect()
}

/// `ObservabilityStore::purge_traces`.
///
/// # Errors
/// A failed write.
pub async fn purge_traces<D: Transactor>(db: &D, before_ns: i64, limit: u32) -> Result<u64, StoreError> {
    let d = db.dialect();
    let victims = purge_victims_sql(d, before_ns, limit);
    db.write_all_tenants(Box::new(move |ex| {
        Box::pin(async move {
            let mut by_tenant: Vec<(String, Vec<Uuid>)> = Vec::new();
            for row in ex.fetch("find traces to purge", victims).await? {
                let c = Cells::new(&row, "obs_traces");
                let (tenant, id) = (c.text(0, "tenant")?, c.uuid(1, "trace_id")?);
                match by_tenant.last_mut() {
                    Some((t, ids)) if *t == tenant => ids.push(id),
                    _ => by_tenant.push((tenant, vec![id])),
                }
            }
            let mut traces = 0;
            for (tenant, ids) in &by_tenant {
                for (table, sql) in purge_deletes_sql(d, tenant, ids) {
                    let n = ex.execute("purge traces", sql).await?;
                    if table == "obs_traces" {
                        traces += n;
                    }
                }
            }
            Ok(traces)
        })
    }))
    .await
}

/// `ObservabilityStore::purge_metrics`.
///
/// # Errors
/// A failed write.
pub async fn purge_metrics<D: Transactor>(db: &D, before_ns: i64, limit: u32) -> Result<u64, StoreError> {
    let mut sql = Sql::new(db.dialect());
    sql.push(
        "DELETE FROM obs_metrics WHERE (name, instance, at_ns) IN (SELECT name, instance, at_ns FROM obs_metrics ",
    );
    sql.push("WHERE at_ns < ").bind(before_ns).push(" ORDER BY at_ns LIMIT ").bind(i64::from(limit)).push(")");
    db.write_all_tenants(Box::new(move |ex| Box::pin(ex.execute("purge metrics", sql)))).await
}

/// Implements `memlayer_ports::ObservabilityStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! observability_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::ObservabilityStore for $backend {
            async fn ingest(
                &self,
                tenant: &::memlayer_domain::TenantId,
                spans: Vec<::memlayer_domain::observability::NewSpan>,
            ) -> Result<::memlayer_ports::IngestReport, ::memlayer_ports::StoreError> {
                $crate::observability::ingest(self, tenant, spans).await
            }

            async fn list_traces(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::observability::TraceQuery,
            ) -> Result<
                ::memlayer_domain::Page<
                    ::memlayer_domain::observability::TraceSummary,
                    ::memlayer_domain::observability::TraceCursor,
                >,
                ::memlayer_ports::StoreError,
            > {
                $crate::observability::list_traces(self, tenant, query).await
            }

            async fn trace(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::TraceId,
                max_spans: u32,
            ) -> Result<::memlayer_domain::observability::TraceDetail, ::memlayer_ports::StoreError> {
                $crate::observability::trace(self, tenant, id, max_spans).await
            }

            async fn model_calls(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::observability::PerfQuery,
            ) -> Result<::memlayer_ports::ModelCalls, ::memlayer_ports::StoreError> {
                $crate::observability::model_calls(self, tenant, query).await
            }

            async fn daily_usage(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::observability::CostQuery,
            ) -> Result<Vec<::memlayer_domain::observability::UsageRow>, ::memlayer_ports::StoreError> {
                $crate::observability::daily_usage(self, tenant, query).await
            }

            async fn create_eval_run(
                &self,
                tenant: &::memlayer_domain::TenantId,
                run: ::memlayer_domain::observability::NewEvalRun,
            ) -> Result<::memlayer_domain::observability::EvalRun, ::memlayer_ports::StoreError> {
                $crate::observability::create_eval_run(self, tenant, run).await
            }

            async fn list_eval_runs(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::observability::EvalQuery,
            ) -> Result<
                ::memlayer_domain::Page<::memlayer_domain::observability::EvalRun, String>,
                ::memlayer_ports::StoreError,
            > {
                $crate::observability::list_eval_runs(self, tenant, query).await
            }

            async fn get_eval_run(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::EvalRunId,
            ) -> Result<::memlayer_domain::observability::EvalRun, ::memlayer_ports::StoreError> {
                $crate::observability::get_eval_run(self, tenant, id).await
            }

            async fn eval_examples(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::EvalRunId,
                after: Option<u32>,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::observability::EvalExample>, ::memlayer_ports::StoreError> {
                $crate::observability::eval_examples(self, tenant, id, after, limit).await
            }

            async fn latest_eval_runs(
                &self,
                tenant: &::memlayer_domain::TenantId,
                dataset: &str,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::observability::EvalRun>, ::memlayer_ports::StoreError> {
                $crate::observability::latest_eval_runs(self, tenant, dataset, limit).await
            }

            async fn record_metrics(
                &self,
                samples: Vec<::memlayer_domain::observability::MetricSample>,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::observability::record_metrics(self, samples).await
            }

            async fn metric_series(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::observability::MetricQuery,
            ) -> Result<Vec<::memlayer_domain::observability::MetricSeries>, ::memlayer_ports::StoreError> {
                $crate::observability::metric_series(self, tenant, query).await
            }

            async fn store_gauges(&self) -> Result<::memlayer_ports::StoreGauges, ::memlayer_ports::StoreError> {
                $crate::observability::store_gauges(self).await
            }

            async fn purge_traces(&self, before_ns: i64, limit: u32) -> Result<u64, ::memlayer_ports::StoreError> {
                $crate::observability::purge_traces(self, before_ns, limit).await
            }

            async fn purge_metrics(&self, before_ns: i64, limit: u32) -> Result<u64, ::memlayer_ports::StoreError> {
                $crate::observability::purge_metrics(self, before_ns, limit).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_clause_reads_the_old_row_in_both_dialects() {
        let pg = merge_clause(Dialect::Postgres);
        assert!(pg.contains("start_ns = least(obs_traces.start_ns, excluded.start_ns)"), "{pg}");
        assert!(pg.contains("status = CASE WHEN obs_traces.error_count + excluded.error_count > 0 THEN 'error'"));
        let lite = merge_clause(Dialect::Sqlite);
        assert!(lite.contains("end_ns = max(obs_traces.end_ns, excluded.end_ns)"), "{lite}");
        assert!(lite.contains("root_span_id = coalesce(obs_traces.root_span_id, excluded.root_span_id)"));
    }

    #[test]
    fn span_ids_round_trip_through_signed_keys() {
        for bytes in [[0xff; 8], [0x80, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1]] {
            let id = SpanId::from_bytes("s", &bytes).unwrap_or_else(|_| unreachable!());
            assert_eq!(span_id("t", "c", span_key(id)).ok(), Some(id));
        }
    }
}
