//! [`memlayer_ports::WorkingMemoryStore`] on libSQL: written once in
//! `memlayer_adapters_sql::working` (a current row per document plus its
//! kept versions, migration 13), over the statements [`crate::exec`] runs on
//! libSQL.

use crate::LibsqlBackend;

memlayer_adapters_sql::working_store!(LibsqlBackend);
