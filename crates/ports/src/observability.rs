//! [`ObservabilityStore`]: spans with their events and links, the traces
//! derived from them, model calls and daily usage read from them,
//! evaluation runs, the server's metric samples, and their retention.
//!
//! Every span comes in through [`ObservabilityStore::ingest`], whoever made
//! it: the OTLP endpoint, or memlayer tracing itself.

use async_trait::async_trait;
use memlayer_domain::observability::{
    CostQuery, EvalExample, EvalQuery, EvalRun, MetricQuery, MetricSample, MetricSeries, ModelCall, NewEvalRun,
    NewSpan, PerfQuery, TraceCursor, TraceDetail, TraceQuery, TraceSummary, UsageRow,
};
use memlayer_domain::{EvalRunId, Page, TenantId, TraceId};

use crate::StoreError;

/// Most spans one [`ObservabilityStore::ingest`] call takes.
pub const MAX_INGEST_SPANS: usize = 10_000;

/// What an ingest stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Spans stored.
    pub stored: usize,
    /// Spans already stored (the same trace and span id), not stored again.
    pub duplicates: usize,
}

/// Model calls read for a performance query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCalls {
    /// The calls, oldest first.
    pub calls: Vec<ModelCall>,
    /// The range held more than the query's `max_calls`.
    pub truncated: bool,
}

/// Figures of the store for the system metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// The database's size in bytes, when the engine can say.
    pub database_bytes: Option<i64>,
    /// Messages of every tenant waiting for their embedding.
    pub embedding_queue: i64,
}

/// Observability's storage.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ObservabilityStore: Send + Sync + std::fmt::Debug {
    /// Stores `spans` (accepted spans, at most [`MAX_INGEST_SPANS`]) of
    /// `tenant` with their events and links, and adds them to their
    /// traces' summaries.
    ///
    /// MUST store all or nothing (one transaction). MUST NOT store a span
    /// twice: a span whose trace and span id the tenant already holds (or
    /// that repeats one in `spans`) is skipped, and counted neither in the
    /// report's `stored` nor in its trace's summary, so a retried export
    /// changes nothing. MUST fold each trace's new spans into its stored
    /// summary as [`TraceSummary::merge`] does
    /// ([`TraceSummary::of_batch`] of the spans stored). MUST keep a span
    /// whose parent is not stored. MUST return `Invalid` on `spans` past
    /// [`MAX_INGEST_SPANS`].
    async fn ingest(&self, tenant: &TenantId, spans: Vec<NewSpan>) -> Result<IngestReport, StoreError>;

    /// A page of the tenant's traces matching `query` in its order, and the
    /// cursor of the next page (`None` on the last).
    ///
    /// MUST apply every filter (a trace starting in `[from, to)`; model,
    /// agent, service and status exactly; duration at least the minimum;
    /// the text a case-sensitive substring of a span's name or attributes'
    /// JSON); MUST page by keyset without skipping or repeating a trace
    /// whose sort key does not change meanwhile; MUST see only `tenant`'s
    /// traces.
    async fn list_traces(
        &self,
        tenant: &TenantId,
        query: &TraceQuery,
    ) -> Result<Page<TraceSummary, TraceCursor>, StoreError>;

    /// A trace of `tenant` with at most `max_spans` of its spans (earliest
    /// first, with their events in time order and links) and whether it
    /// has more. MUST return `NotFound` for a trace the tenant does not
    /// hold (another tenant's included).
    async fn trace(&self, tenant: &TenantId, id: TraceId, max_spans: u32) -> Result<TraceDetail, StoreError>;

    /// The tenant's model calls starting in `[query.from_ns, query.to_ns)`
    /// matching its filters, oldest first, at most `query.max_calls`; a
    /// call's agent is its own, else its trace's.
    async fn model_calls(&self, tenant: &TenantId, query: &PerfQuery) -> Result<ModelCalls, StoreError>;

    /// The tenant's model-call usage per UTC day, model and agent (the
    /// span's agent, else its trace's) over the query's days, ordered by
    /// day, model, agent (`None` first).
    async fn daily_usage(&self, tenant: &TenantId, query: &CostQuery) -> Result<Vec<UsageRow>, StoreError>;

    /// Stores an evaluation run with its examples (one transaction).
    /// MUST return `Invalid` naming the field for what
    /// [`NewEvalRun::validate`] refuses.
    async fn create_eval_run(&self, tenant: &TenantId, run: NewEvalRun) -> Result<EvalRun, StoreError>;

    /// The tenant's runs matching `query`, newest `at` first (then newest
    /// id), a page at a time.
    async fn list_eval_runs(&self, tenant: &TenantId, query: &EvalQuery) -> Result<Page<EvalRun, String>, StoreError>;

    /// MUST return `NotFound` for a run the tenant does not hold.
    async fn get_eval_run(&self, tenant: &TenantId, id: EvalRunId) -> Result<EvalRun, StoreError>;

    /// At most `limit` examples of a run after index `after` (from the
    /// first with `None`), in the order posted. MUST return `NotFound` as
    /// [`ObservabilityStore::get_eval_run`].
    async fn eval_examples(
        &self,
        tenant: &TenantId,
        id: EvalRunId,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<EvalExample>, StoreError>;

    /// The newest run of each (model, agent) pair on `dataset`, at most
    /// `limit`, ordered by model then agent.
    async fn latest_eval_runs(&self, tenant: &TenantId, dataset: &str, limit: u32) -> Result<Vec<EvalRun>, StoreError>;

    /// Stores system metric samples (no tenant's: the server's).
    async fn record_metrics(&self, samples: Vec<MetricSample>) -> Result<(), StoreError>;

    /// The samples of `query` bucketed per name and instance (average,
    /// minimum, maximum and count per bucket), ordered by name, instance
    /// and bucket. Samples are the server's, not a tenant's: `tenant` is
    /// only whose transaction reads them.
    async fn metric_series(&self, tenant: &TenantId, query: &MetricQuery) -> Result<Vec<MetricSeries>, StoreError>;

    /// The store's own figures for the system metrics.
    async fn store_gauges(&self) -> Result<StoreGauges, StoreError>;

    /// Deletes, across tenants, at most `limit` traces whose last span
    /// ended before `before_ns`, with their spans, events and links, in one
    /// transaction; returns how many traces it deleted.
    async fn purge_traces(&self, before_ns: i64, limit: u32) -> Result<u64, StoreError>;

    /// Deletes at most `limit` metric samples taken before `before_ns`;
    /// returns how many.
    async fn purge_metrics(&self, before_ns: i64, limit: u32) -> Result<u64, StoreError>;
}
