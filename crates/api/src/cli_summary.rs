//! `memlayer summary THREAD [--now] [--versions [--limit N] [--cursor C]]`: a thread's summary on
//! the database directly, printed as the HTTP API's JSON.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use memlayer_app::{Services, SummaryError};
use memlayer_domain::{TenantId, ThreadId};

use crate::summary_routes::{SummaryDto, SummaryStatusDto, SummaryVersionsDto};

/// Arguments of `memlayer summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// The thread's id.
    pub thread: String,
    /// Summarise now (one step; a longer backlog goes on when the server runs).
    #[arg(long, conflicts_with = "versions")]
    pub now: bool,
    /// List the kept versions, newest first.
    #[arg(long)]
    pub versions: bool,
    /// With --versions: how many (1 to 1000).
    #[arg(long, default_value_t = 20, requires = "versions")]
    pub limit: u32,
    /// With --versions: a previous page's `next_cursor`.
    #[arg(long, requires = "versions")]
    pub cursor: Option<String>,
    /// Tenant (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// Runs `memlayer summary`: exit 0, or 1 with the reason (for `--now` while
/// the summariser is unreachable: the job is kept and retried).
///
/// # Errors
/// A bad argument, a missing thread or a store failure, with context.
pub async fn run(services: &Services, args: &SummaryArgs) -> anyhow::Result<ExitCode> {
    let tenant = match &args.tenant {
        Some(t) => TenantId::parse(t.clone()).context("--tenant")?,
        None => services.memory.default_tenant().clone(),
    };
    let thread: ThreadId = args.thread.parse().context("THREAD")?;
    let summaries = &services.summaries;
    let json = if args.versions {
        if !(1..=memlayer_domain::MAX_PAGE_SIZE).contains(&args.limit) {
            anyhow::bail!("--limit: must be between 1 and {}", memlayer_domain::MAX_PAGE_SIZE);
        }
        let cursor = args.cursor.as_deref().map(memlayer_domain::Cursor::decode).transpose().context("--cursor")?;
        let page = summaries.versions_page(&tenant, thread, cursor, args.limit).await?;
        serde_json::to_string_pretty(&SummaryVersionsDto {
            items: page.items.into_iter().map(SummaryDto::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        })?
    } else if args.now {
        match summaries.summarize_now(&tenant, thread).await {
            Ok(run) => {
                let mut dto = SummaryStatusDto::from(run.view);
                dto.advanced = Some(run.advanced);
                serde_json::to_string_pretty(&dto)?
            }
            Err(e @ SummaryError::Summarizer { .. }) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
            Err(SummaryError::Store(e)) => return Err(e).context("summarising"),
        }
    } else {
        serde_json::to_string_pretty(&SummaryStatusDto::from(summaries.current(&tenant, thread).await?))?
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}
