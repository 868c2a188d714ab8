//! [`memlayer_ports::CatalogStore`] on Postgres (migration 4): the store
//! itself is written once in `memlayer_adapters_sql::catalog`, over the
//! statements [`crate::exec`] runs on Postgres.

use crate::PgBackend;

memlayer_adapters_sql::catalog_store!(PgBackend);
