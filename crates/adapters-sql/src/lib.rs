//! The SQL core of memlayer, shared by the two SQL adapters
//! (`memlayer-adapters-libsql` and `memlayer-adapters-postgres`).
//!
//! It knows SQL and the domain types, and neither driver: a [`Dialect`]
//! says how the two backends differ (placeholders and the few functions and
//! clauses that are spelled differently); [`Sql`] builds a statement once
//! with its bound [`SqlValue`]s; [`table`] describes each table once, and
//! the CRUD statements derive from the description; [`catalog`] is the
//! store of models, agents, tools and settings, written once over the [`Transactor`] and
//! [`Executor`] traits the adapters implement with their drivers,
//! [`state`] and [`idempotency`] the agent-state and `Idempotency-Key`
//! stores the same way, [`usage`] the tenants' storage counters and the
//! quota check every write that adds to them runs in its transaction, [`keys`] the API key store, [`threads`] the thread store, [`messages`] the
//! message store and its budgets ([`token_counts`] its per-encoding token counts), [`embeddings`] the embedding store, its
//! queue's and searches' rows, [`vectors`] the vector index port and what
//! both vector indexes check, [`working`] the working-memory store,
//! [`summaries`] the thread summaries and their job queue, [`retention`] the
//! retention policies, the steps that apply them and erase a resource, their
//! receipts and the scheduler's lease, [`transfer`] exports and imports
//! keeping ids, [`observability`] spans, traces, model calls, evaluations and
//! system metric samples, and [`migrate`]
//! the migration runner, the `Database` port and every backend's migrations
//! by version.
//!
//! Each port is implemented by a macro an adapter expands for its type
//! (`thread_store!(LibsqlBackend)`; the orphan rule forbids a blanket impl
//! of a foreign trait), over functions of its module; what an engine does
//! its own way is the module's engine trait (`threads::ThreadEngine`,
//! `messages::MessageEngine`, `embeddings::EmbeddingEngine`,
//! `vectors::IndexEngine`, `migrate::DatabaseEngine`), which the adapter
//! implements and the shared functions call after their checks.
//!
//! Invariants:
//! - no driver crate (`libsql`, `tokio-postgres`, `sqlx`) is a dependency;
//! - caller input reaches SQL only as bound parameters, never as SQL text;
//! - a rule about stored data (unique names, one default model, references
//!   that must exist) is written once, here or in the application's
//!   services, never in an adapter: adapters only run statements.

pub mod catalog;
mod dialect;
pub mod embeddings;
mod error;
pub mod exec;
pub mod idempotency;
pub mod keys;
pub mod messages;
pub mod migrate;
pub mod observability;
mod op;
pub mod retention;
mod sql;
pub mod state;
pub mod summaries;
pub mod table;
pub mod threads;
pub mod token_counts;
pub mod transfer;
pub mod usage;
mod value;
pub mod vectors;
pub mod workflows;
pub mod working;

pub use dialect::Dialect;
pub use error::{CorruptRow, DriverError, corrupt};
pub use exec::{Executor, Row, Transactor, Work, WorkFuture};
pub use op::SqlOp;
pub use sql::Sql;
pub use value::{CellSource, Cells, SqlValue};

/// What the port macros ([`catalog_store!`](crate::catalog_store), [`thread_store!`](crate::thread_store), …) need
/// from this crate's dependencies, so the adapters expanding them need not
/// name them.
#[doc(hidden)]
pub mod reexport {
    pub use async_trait::async_trait;
}
