//! [`memlayer_ports::IdempotencyStore`] on Postgres (migration 6,
//! `idempotency_records`, under the tenant row-level security policy):
//! written once in `memlayer_adapters_sql::idempotency`, over the statements
//! [`crate::exec`] runs on Postgres. The claim's primary key makes
//! concurrent claims of one absent key wait for each other and exactly one
//! insert.

use crate::PgBackend;

memlayer_adapters_sql::idempotency_store!(PgBackend);
