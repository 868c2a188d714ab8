//! [`memlayer_ports::WorkingMemoryStore`] on Postgres: written once in
//! `memlayer_adapters_sql::working` (a current row per document plus its
//! kept versions, migration 13, under forced row-level security), over the
//! statements [`crate::exec`] runs on Postgres.

use crate::PgBackend;

memlayer_adapters_sql::working_store!(PgBackend);
