//! [`memlayer_ports::IdempotencyStore`] on libSQL (migration 6,
//! `idempotency_records`): written once in `memlayer_adapters_sql::idempotency`,
//! over the statements [`crate::exec`] runs on libSQL. Every operation is
//! one `IMMEDIATE` write transaction on the one writer connection, so of
//! concurrent claims exactly one inserts.

use crate::LibsqlBackend;

memlayer_adapters_sql::idempotency_store!(LibsqlBackend);
