//! The Postgres storage adapter of memlayer: threads, messages, agent
//! state, embeddings, the catalog and schema migrations in a
//! Postgres database with pgvector, and a pgvector HNSW [`VectorIndex`].
//!
//! [`PgBackend`] implements [`ThreadStore`], [`MessageStore`],
//! [`StateStore`], [`EmbeddingStore`], [`CatalogStore`], [`IdempotencyStore`], [`KeyStore`], [`DeletionLog`] and [`Database`]; [`PgVectorIndex`]
//! implements [`VectorIndex`]. The application holds them behind those traits
//! and never names a driver type.
//!
//! Invariants:
//! - every call runs in one transaction on a pooled connection
//!   (`deadpool-postgres`), and every transaction starts by setting
//!   `memlayer.tenant` transaction-locally: row-level security policies
//!   (forced, so they bind the table owner too) admit only that tenant's
//!   rows, so a query that forgets its tenant filter still sees nothing of
//!   another tenant; `*` admits every tenant and is used only by work that
//!   spans tenants (the embedding queue, index maintenance, migrations);
//!   the same statement sets `statement_timeout` (all but migrations and
//!   schema set-up); session state (`SET LOCAL`, `set_config(…, true)`)
//!   never outlives the transaction, so pooled connections are never
//!   polluted;
//! - `prepare_cached` only for fixed SQL texts, so the per-connection
//!   statement cache stays bounded;
//! - a role that bypasses row-level security is refused at open unless
//!   [`PgConfig::allow_rls_bypass`]; TLS follows the URL's `sslmode` and
//!   `sslrootcert` (rustls);
//! - an append locks the thread row, reserves consecutive sequence numbers,
//!   loads the messages by binary COPY and bumps `updated_at` in one
//!   transaction; a statement trigger gives every inserted message its
//!   embedding job in the same statement, and the full-text entry is a
//!   generated column of the row;
//! - deletes cascade (`ON DELETE CASCADE`) to messages, states, vectors and
//!   jobs in the deleting statement; triggers log deleted messages of live
//!   threads and threads marked deleted in `deletion_log` ([`DeletionLog`],
//!   migration 22) in the deleting transaction, each entry with its
//!   transaction's id, so a reader that remembers the transactions in
//!   progress at its last read misses none that commit out of order;
//! - caller input reaches SQL only as bound parameters, never as SQL text;
//!   lexical queries reach `to_tsquery` only as quoted words;
//! - driver errors become [`StoreError`] here (connection, pool and lock
//!   trouble and the statement timeout → `Unavailable`, constraint →
//!   `Conflict`, a server limit exceeded by the input → `Invalid`, else
//!   `Backend`);
//! - the schema changes only through the versioned migrations embedded in
//!   this crate (`migrations/`), each with up and down SQL; opening never
//!   migrates, [`PgBackend::open_migrated`] does.
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
mod idempotency;
mod keys;
mod messages;
mod migrations;
mod state;
mod summaries;
#[cfg(feature = "testing")]
pub mod testing;
mod threads;
mod tls;
mod transfer;
mod vectors;
mod workflows;
mod working;

pub use backend::PgBackend;
pub use config::{PgConfig, describe_url};
#[cfg(doc)]
use memlayer_ports::{
    CatalogStore, Database, DeletionLog, EmbeddingStore, IdempotencyStore, KeyStore, MessageStore, StateStore,
    ThreadStore, VectorIndex,
};
pub use vectors::{HnswConfig, MAX_INDEXED_DIMENSIONS, Metric, PgVectorIndex};

memlayer_adapters_sql::database!(PgBackend);
memlayer_adapters_sql::usage_store!(PgBackend);
memlayer_adapters_sql::retention_store!(PgBackend);
// Observability (issue 17, migration 21): spans, traces, evaluations, system metric samples.
memlayer_adapters_sql::observability_store!(PgBackend);
