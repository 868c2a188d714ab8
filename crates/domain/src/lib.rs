//! Pure domain types of memlayer.
//!
//! This crate is the centre of the hexagon: threads, messages, agent state,
//! keyset cursors and the validation rules that make a value of these types
//! trustworthy once constructed ("parse, don't validate").
//!
//! Invariants:
//! - no I/O, no async, no knowledge of databases, HTTP or models;
//! - every constructor that takes outside input is fallible and returns a
//!   [`DomainError`] naming the offending field;
//! - messages are ordered by their per-thread sequence number, never by time.

mod auth;
mod catalog;
mod context;
mod error;
mod ids;
mod message;
mod nul;
pub mod observability;
mod page;
mod query;
mod quota;
mod retention;
mod seal;
mod search;
mod state;
mod summary;
mod thread;
mod token;
mod workflow;
mod working;

pub use auth::{
    ApiKey, Credential, KeyId, MAX_KEY_NAME_BYTES, PresentedKey, Principal, Reach, Scope, Scopes, parse_key_name,
};
pub use catalog::{
    AgentConfig, MAX_AGENT_TOOLS, MAX_CATALOG_JSON_BYTES, MAX_DESCRIPTION_BYTES, MAX_PROMPT_BYTES, MEMORY_METADATA_KEY,
    MemoryOptions, ModelConfig, NewAgent, NewModel, NewTool, Setting, SettingName, ToolConfig, validate_setting_value,
};
pub use context::{
    Budget, ChatFormat, ContextOptions, DropReason, MAX_BUDGET, MAX_PROCESSOR_ITEMS, MAX_PROCESSORS, PackInput, Plan,
    Priority, ProcessorSpec, RecallOptions, RecallScope, Section, Segments, Shape, Shares, TooSmall, Unit, pack,
    recallable, segment_recent,
};
pub use error::DomainError;
pub use ids::{
    AgentId, AgentName, EvalRunId, MessageId, ModelId, PolicyId, ResourceId, RunId, StepId, TenantId, ThreadId, ToolId,
    WorkflowId,
};
pub use message::{
    MAX_BATCH, MAX_CONTENT_BYTES, MAX_TOOL_ARGUMENT_BYTES, MESSAGE_OVERHEAD_BYTES, Message, NewMessage, Role, ToolCall,
    check_batch, json_len, model_text,
};
pub use nul::{NUL_REFUSED, no_nul, no_nul_json, replace_nul};
pub use observability::{SpanId, TraceId};
pub use page::{Cursor, CursorKind, Direction, MAX_PAGE_SIZE, Page, PageSize, resolve_message_cursor};
pub use query::{
    AGENT_FIELDS, After, CatalogEntity, CatalogRecord, FieldKind, FieldSpec, FieldValue, Filter, ListCursor, ListQuery,
    MAX_FILTERS, MAX_IN_VALUES, MAX_VALUE_BYTES, MODEL_FIELDS, Op, Sort, TOOL_FIELDS,
};
pub use quota::{Quota, QuotaKind, Usage};
pub use retention::{
    IdRange, MAX_POLICIES, MAX_RETENTION_SECS, NewRetentionPolicy, PINNED_KEY, RetentionPolicy, RetentionRule,
    RetentionRules, RetentionRun, RunCounts, RunKind,
};
pub use search::{
    COVERAGE_COUNT_LIMIT, Coverage, Embedding, EmbeddingCounts, MAX_DIMENSIONS, MAX_JOB_ERROR_BYTES, MAX_QUERY_CHARS,
    MAX_QUERY_TERMS, MAX_TOP_K, MAX_WINDOW, STOP_WORDS, SearchHit, SearchMode, SearchPlan, SearchQuery, SearchScope,
    SearchStage, StageKind, TopK, Window, job_error, query_terms,
};
pub use state::{AgentState, StateVersion};
pub use summary::{NewSummary, Summary};
pub use thread::{
    FORKED_FROM_KEY, ForkThread, Metadata, MetadataFilter, ModelName, NewThread, Thread, ThreadFilter, ThreadPatch,
    Title, parse_model,
};
pub use token::{TokenCount, TokenEncoding};
pub use workflow::{
    Lease, MAX_STEPS, NewStep, NewWorkflow, RunnerSpec, Step, StepName, StepStatus, Transition, TransitionError,
    Workflow, WorkflowCursor, WorkflowEvent, WorkflowFilter, WorkflowOp, WorkflowPatch, WorkflowState, WorkflowStatus,
    backoff, resolve_refs,
};
pub use working::{
    WorkingContent, WorkingFormat, WorkingFormatKind, WorkingMemory, WorkingMemoryOptions, WorkingScope,
    WorkingScopeKind,
};

/// Wall-clock timestamps used across the domain (UTC).
pub type Timestamp = time::OffsetDateTime;

/// The current time, truncated to microseconds so that every backend can
/// round-trip it exactly.
#[must_use]
pub fn now() -> Timestamp {
    let t = time::OffsetDateTime::now_utc();
    let micros = t.unix_timestamp_nanos() / 1_000;
    from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Microseconds since the Unix epoch, the storage representation of a [`Timestamp`].
#[must_use]
pub fn to_micros(t: Timestamp) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Inverse of [`to_micros`]; out-of-range values clamp to the Unix epoch.
#[must_use]
pub fn from_micros(micros: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
