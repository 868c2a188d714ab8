//! [`memlayer_ports::WorkflowStore`] on Postgres: written once in
//! `memlayer_adapters_sql::workflows` (the domain's state machine applied
//! and stored in one transaction, the workflow row locked), over the
//! statements [`crate::exec`] runs on Postgres (migration 19, under
//! row-level security).

use crate::PgBackend;

memlayer_adapters_sql::workflow_store!(PgBackend);
