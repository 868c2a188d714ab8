//! [`memlayer_ports::ConfigStore`] on Postgres (migration 4): the store
//! itself is written once in `memlayer_adapters_sql::configs`, over the
//! statements [`crate::exec`] runs on Postgres.

use crate::PgBackend;

memlayer_adapters_sql::config_store!(PgBackend);
