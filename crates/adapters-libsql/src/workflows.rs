//! [`memlayer_ports::WorkflowStore`] on libSQL: written once in
//! `memlayer_adapters_sql::workflows` (the domain's state machine applied
//! and stored in one transaction), over the statements [`crate::exec`] runs
//! on libSQL (migration 19).

use crate::LibsqlBackend;

memlayer_adapters_sql::workflow_store!(LibsqlBackend);
