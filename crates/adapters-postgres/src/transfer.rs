//! [`memlayer_ports::TransferStore`] on Postgres: written once in
//! `memlayer_adapters_sql::transfer` (exports in keyset pages, a thread's
//! import in one transaction), over the statements [`crate::exec`] runs on
//! Postgres.

use crate::PgBackend;

memlayer_adapters_sql::transfer_store!(PgBackend);
