//! [`memlayer_ports::TransferStore`] on libSQL: written once in
//! `memlayer_adapters_sql::transfer` (exports in keyset pages, a thread's
//! import in one transaction), over the statements [`crate::exec`] runs on
//! libSQL.

use crate::LibsqlBackend;

memlayer_adapters_sql::transfer_store!(LibsqlBackend);
