//! The libSQL storage adapter of memlayer: threads, messages, agent state,
//! embeddings and their job queue, full-text search, the catalog,
//! idempotency records and schema migrations on an embedded
//! SQLite/libSQL file, a private in-memory database (tests), or a remote
//! libSQL server (feature `remote`).
//!
//! [`LibsqlBackend`] implements [`ThreadStore`], [`MessageStore`],
//! [`StateStore`], [`EmbeddingStore`], [`CatalogStore`], [`IdempotencyStore`], [`KeyStore`], [`DeletionLog`] and [`Database`]; [`LibsqlVectorIndex`]
//! implements [`VectorIndex`] on libSQL's native DiskANN index. The
//! application holds them behind those traits and never names a libSQL type.
//!
//! Invariants:
//! - one writer connection, serialised by an async mutex, and every write in
//!   an `IMMEDIATE` transaction (deferred transactions fail with `SQLITE_BUSY`
//!   under concurrency), which the writes queued behind it share, each in
//!   its own savepoint (group commit: one `fsync` for all of them, a failed
//!   write undone alone, nobody answered before the commit); readers are separate connections, which WAL lets run
//!   beside the writer, from a pool of at most `readers` (a read that finds
//!   none free within `reader_timeout` is `Unavailable`); `:memory:` uses its
//!   single connection for everything;
//! - an append bumps `threads.last_seq` and inserts its messages in the same
//!   transaction, so sequence numbers are consecutive and gap-free;
//! - an append writes only its messages: every message above the
//!   `semantic_watermark` (migration 3) counts as not yet indexed nor queued
//!   (and as pending in every progress count), and `catch_up` gives it its
//!   full-text entry and embedding job, run by the queue's writers and by a
//!   background indexer task that readers wake and wait for (bounded: they
//!   never take the writer themselves); the
//!   watermark never stays above the newest rowid, since SQLite hands out
//!   `max(rowid) + 1` again after the newest messages are deleted
//!   (migration 5);
//! - a delete trigger removes a message's vectors and job in the deleting
//!   statement, whatever the delete path, and queues its full-text entry in
//!   `lexical_stale`, which searches leave out until the catch-up removes it;
//! - triggers log every deleted message and every thread marked deleted in
//!   `deletion_log` ([`DeletionLog`], migration 22), numbered in commit
//!   order, so in-process indexes of every process on the file forget them:
//!   the catch-up applies the log to this process's full-text index before
//!   feeding it (its own cursor, never consuming the log), and searches
//!   leave out what it has not applied yet;
//! - every tenant has its own FTS5 table (`lexical_fts_<id>`, migration 5),
//!   so BM25's statistics, and so a tenant's lexical scores, depend on that
//!   tenant's data alone;
//! - caller input reaches SQL only as bound parameters, never as SQL text
//!   (a tenant's full-text table is named by an integer id);
//! - driver errors become [`StoreError`] here (busy/locked → `Unavailable`,
//!   constraint → `Conflict`, else `Backend`); a corrupt stored row is a
//!   `Backend` error, never a panic;
//! - the schema changes only through the versioned migrations embedded in
//!   this crate (`migrations/`), each with up and down SQL; opening never
//!   migrates, [`LibsqlBackend::open_migrated`] does.
//!
//! What it must not know: HTTP, JSON wire shapes, configuration sources,
//! embedding models or tokenizers. It knows the domain types and the ports only.

mod backend;
mod catalog;
mod config;
mod deletions;
mod embeddings;
mod error;
mod exec;
mod filter_sql;
mod group;
mod idempotency;
mod journal;
mod keys;
mod messages;
mod migrations;
#[cfg(test)]
mod plans;
mod rows;
mod state;
mod statements;
mod summaries;
mod threads;
mod transfer;
mod values;
mod vectors;
mod workflows;
mod working;

pub use backend::LibsqlBackend;
pub use config::{LibsqlConfig, LibsqlLocation, Synchronous};
#[cfg(doc)]
use memlayer_ports::{
    CatalogStore, Database, DeletionLog, EmbeddingStore, IdempotencyStore, KeyStore, MessageStore, StateStore,
    ThreadStore, VectorIndex,
};
pub use vectors::{LibsqlVectorIndex, NativeIndexConfig};

memlayer_adapters_sql::database!(LibsqlBackend);
memlayer_adapters_sql::usage_store!(LibsqlBackend);
memlayer_adapters_sql::retention_store!(LibsqlBackend);
// Observability (issue 17, migration 21): spans, traces, evaluations, system metric samples.
memlayer_adapters_sql::observability_store!(LibsqlBackend);
