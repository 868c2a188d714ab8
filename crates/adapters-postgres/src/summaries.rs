//! [`memlayer_ports::SummaryStore`] and [`memlayer_ports::SummaryQueue`] on
//! Postgres: written once in `memlayer_adapters_sql::summaries` (versioned
//! summaries, one durable job per thread), over the statements
//! [`crate::exec`] runs on Postgres (migration 14, under row-level
//! security).

use crate::PgBackend;

memlayer_adapters_sql::summary_store!(PgBackend);
