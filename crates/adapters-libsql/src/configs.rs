//! [`memlayer_ports::ConfigStore`] on libSQL (migration 4): the store itself
//! is written once in `memlayer_adapters_sql::configs`, over the statements
//! [`crate::exec`] runs on libSQL.

use crate::LibsqlBackend;

memlayer_adapters_sql::config_store!(LibsqlBackend);
