//! [`memlayer_ports::CatalogStore`] on libSQL (migration 4): the store itself
//! is written once in `memlayer_adapters_sql::catalog`, over the statements
//! [`crate::exec`] runs on libSQL.

use crate::LibsqlBackend;

memlayer_adapters_sql::catalog_store!(LibsqlBackend);
