//! `memlayer context THREAD`: a thread's assembled context from the command
//! line, on the configured database directly (no server needed). Output is
//! the same JSON as `POST /api/threads/{id}/context`.

use clap::Args;
use memlayer_app::{ContextRequest, ContextService};
use memlayer_domain::{RecallOptions, TenantId, ThreadId};

use crate::context_routes::{ContextDto, ContextRequestDto};

/// `memlayer context …`.
#[derive(Debug, Args)]
pub struct ContextArgs {
    /// The thread.
    pub thread: String,
    /// Tokens for the whole prompt, 1 to 10000000 (default: the thread's
    /// token_budget, else the catalog model's window minus its output).
    #[arg(long, allow_negative_numbers = true)]
    pub budget: Option<i64>,
    /// Model whose tokenizer counts (default: the thread's, else its agent's).
    #[arg(long)]
    pub model: Option<String>,
    /// What recall searches for (default: the newest user message).
    #[arg(long)]
    pub query: Option<String>,
    /// At least this many recent messages when they fit.
    #[arg(long)]
    pub last_n: Option<u32>,
    /// Skip recall (no query is embedded).
    #[arg(long)]
    pub no_recall: bool,
    /// Tenant (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// Assembles and prints the context.
///
/// # Errors
/// The input's or the assembly's error, as the API would name it.
pub async fn run(context: &ContextService, default_tenant: &TenantId, args: &ContextArgs) -> anyhow::Result<()> {
    let tenant = match &args.tenant {
        Some(t) => TenantId::parse(t.clone())?,
        None => default_tenant.clone(),
    };
    let thread: ThreadId = args.thread.parse()?;
    let dto = ContextRequestDto {
        model: args.model.clone(),
        budget: args.budget.map(serde_json::Number::from),
        query: args.query.clone(),
        last_n: args.last_n,
        ..ContextRequestDto::default()
    };
    let mut request = ContextRequest::try_from(dto)?;
    if args.no_recall {
        request.recall = Some(RecallOptions { disabled: true, ..RecallOptions::default() });
    }
    let assembled = context.assemble(&tenant, thread, request).await?;
    println!("{}", serde_json::to_string_pretty(&ContextDto::from(&assembled))?);
    Ok(())
}
