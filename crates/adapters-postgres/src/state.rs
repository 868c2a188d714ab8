//! [`memlayer_ports::StateStore`] on Postgres: written once in
//! `memlayer_adapters_sql::state` (optimistic concurrency on a version
//! number), over the statements [`crate::exec`] runs on Postgres.

use crate::PgBackend;

memlayer_adapters_sql::state_store!(PgBackend);
