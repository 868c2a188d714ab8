//! [`memlayer_ports::StateStore`] on libSQL: written once in
//! `memlayer_adapters_sql::state` (optimistic concurrency on a version
//! number), over the statements [`crate::exec`] runs on libSQL.

use crate::LibsqlBackend;

memlayer_adapters_sql::state_store!(LibsqlBackend);
