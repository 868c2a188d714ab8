//! The ports of memlayer: object-safe async traits that the application calls
//! and adapters implement.
//!
//! Each trait documents its contract with "MUST" sentences; the contract suite
//! (feature `contract`, module [`contract`]) tests exactly those sentences
//! against every adapter.
//!
//! Invariants:
//! - domain types in and out, never driver types (no libsql, postgres, axum);
//! - one backend-neutral error, [`StoreError`];
//! - every read and write is scoped by a [`memlayer_domain::TenantId`]: data of
//!   another tenant is indistinguishable from data that does not exist.

mod catalog;
mod database;
mod deletions;
mod embedder;
mod embeddings;
mod error;
mod idempotency;
mod keys;
mod lexical;
mod messages;
mod observability;
mod retention;
mod state;
mod summaries;
mod threads;
mod tokens;
mod transfer;
mod usage;
mod vectors;
mod workflows;
mod working;

#[cfg(feature = "contract")]
pub mod contract;

pub use catalog::CatalogStore;
pub use database::{Database, DurabilitySetting, MigrationStatus};
pub use deletions::{Deletion, DeletionCursor, DeletionLog, Deletions};
pub use embedder::{Embedder, EmbedderInfo};
pub use embeddings::{EmbeddingStore, PendingEmbedding};
pub use error::StoreError;
pub use idempotency::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse, check_claim, check_response,
};
pub use keys::{KeyListing, KeyStore, SecretHash};
pub use lexical::{LexicalDelta, LexicalEntry, LexicalIndex};
pub use messages::{ByteBudget, MessageStore, SeqRange, Windows};
pub use observability::{IngestReport, MAX_INGEST_SPANS, ModelCalls, ObservabilityStore, StoreGauges};
pub use retention::{PruneStep, RetentionStore};
pub use state::StateStore;
pub use summaries::{
    MAX_SUMMARIZER_NAME_BYTES, MAX_SUMMARY_ERROR_BYTES, Summarizer, SummaryBacklog, SummaryJob, SummaryQueue,
    SummaryStore, check_new_summary, cut_to_bytes,
};
pub use threads::{Fork, Sweep, ThreadStore};
pub use tokens::TokenCounter;
pub use transfer::{Catalog, Differs, Imported, ThreadExtras, ThreadRecords, TransferStore};
pub use usage::UsageStore;
pub use vectors::{IndexKind, ScoredHit, SearchFilter, ThreadSelection, VectorEntry, VectorIndex, VectorSearch};
pub use workflows::{ClaimedStep, MAX_EVENT_PAGE, MAX_WORKFLOW_PAGE, StepOutcome, StepRun, StepRunner, WorkflowStore};
pub use working::WorkingMemoryStore;

#[cfg(feature = "mocks")]
pub use {
    catalog::MockCatalogStore,
    database::MockDatabase,
    deletions::MockDeletionLog,
    embedder::MockEmbedder,
    embeddings::MockEmbeddingStore,
    idempotency::MockIdempotencyStore,
    keys::MockKeyStore,
    messages::MockMessageStore,
    observability::MockObservabilityStore,
    retention::MockRetentionStore,
    state::MockStateStore,
    summaries::{MockSummarizer, MockSummaryQueue, MockSummaryStore},
    threads::MockThreadStore,
    tokens::MockTokenCounter,
    transfer::MockTransferStore,
    usage::MockUsageStore,
    vectors::MockVectorIndex,
    workflows::MockWorkflowStore,
    working::MockWorkingMemoryStore,
};
