//! [`memlayer_ports::SummaryStore`] and [`memlayer_ports::SummaryQueue`] on
//! libSQL: written once in `memlayer_adapters_sql::summaries` (versioned
//! summaries, one durable job per thread), over the statements
//! [`crate::exec`] runs on libSQL (migration 14).

use crate::LibsqlBackend;

memlayer_adapters_sql::summary_store!(LibsqlBackend);
