//! Retention on the command line, on the database directly:
//! `memlayer retention policies list|get|create|update|delete`,
//! `memlayer retention runs`, `memlayer prune --dry-run|--apply` and
//! `memlayer erase-resource ID`, printing the HTTP API's JSON (`prune`:
//! one line per policy, then the receipts as JSON; on a terminal a progress
//! bar while it runs).

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use memlayer_app::Services;
use memlayer_domain::{NewRetentionPolicy, PolicyId, ResourceId, RetentionRun, RunCounts, RunId, TenantId};

use crate::progress;
use crate::retention_routes::{PoliciesDto, PolicyBody, PolicyDto, RunDto, RunsDto};

/// `memlayer retention …`.
#[derive(Debug, Subcommand)]
pub enum RetentionAction {
    /// The tenant's retention policies.
    Policies {
        /// What to do.
        #[command(subcommand)]
        action: PoliciesAction,
    },
    /// The tenant's receipts, newest first.
    Runs {
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only receipts older than this run id (a previous page's last).
        #[arg(long)]
        before: Option<String>,
    },
}

/// `memlayer retention policies …`.
#[derive(Debug, Subcommand)]
pub enum PoliciesAction {
    /// List the tenant's policies.
    List,
    /// One policy.
    Get {
        /// The policy's id.
        id: String,
    },
    /// Create a policy.
    Create(PolicyArgs),
    /// Replace a policy's scope and rules.
    Update {
        /// The policy's id.
        id: String,
        /// The new scope and rules.
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Delete a policy.
    Delete {
        /// The policy's id.
        id: String,
    },
}

/// A policy's scope and rules (at least one rule; numbers at least 1).
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Only threads of this agent (it need not exist yet).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only threads of this resource (it need not exist yet).
    #[arg(long)]
    pub resource: Option<String>,
    /// Delete threads idle longer than this many seconds.
    #[arg(long, allow_negative_numbers = true)]
    pub max_thread_age_secs: Option<i64>,
    /// Delete messages older than this many seconds.
    #[arg(long, allow_negative_numbers = true)]
    pub max_message_age_secs: Option<i64>,
    /// Keep at most this many messages per thread.
    #[arg(long, allow_negative_numbers = true)]
    pub max_messages_per_thread: Option<i64>,
    /// With --max-messages-per-thread: only messages a summary covers.
    #[arg(long)]
    pub only_summarized: bool,
    /// Keep at most this many threads per resource.
    #[arg(long, allow_negative_numbers = true)]
    pub max_threads_per_resource: Option<i64>,
}

impl PolicyArgs {
    fn to_new(&self) -> anyhow::Result<NewRetentionPolicy> {
        let body = PolicyBody {
            agent_id: self.agent.clone(),
            resource_id: self.resource.clone(),
            max_thread_age_secs: self.max_thread_age_secs,
            max_message_age_secs: self.max_message_age_secs,
            max_messages_per_thread: self.max_messages_per_thread,
            only_summarized: self.only_summarized,
            max_threads_per_resource: self.max_threads_per_resource,
        };
        Ok(NewRetentionPolicy::try_from(body)?)
    }
}

fn print(json: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(json)?).context("writing to stdout")
}

/// Runs `memlayer retention …` for `tenant`.
///
/// # Errors
/// A bad argument or a store failure, with context.
pub async fn run(services: &Services, tenant: &TenantId, action: &RetentionAction) -> anyhow::Result<()> {
    let r = &services.retention;
    match action {
        RetentionAction::Policies { action } => match action {
            PoliciesAction::List => {
                let items = r.list_policies(tenant).await?.into_iter().map(PolicyDto::from).collect();
                print(&PoliciesDto { items })
            }
            PoliciesAction::Get { id } => {
                let id: PolicyId = id.parse().context("ID")?;
                print(&PolicyDto::from(r.get_policy(tenant, id).await?))
            }
            PoliciesAction::Create(args) => print(&PolicyDto::from(r.create_policy(tenant, args.to_new()?).await?)),
            PoliciesAction::Update { id, policy } => {
                let id: PolicyId = id.parse().context("ID")?;
                print(&PolicyDto::from(r.replace_policy(tenant, id, policy.to_new()?).await?))
            }
            PoliciesAction::Delete { id } => {
                let id: PolicyId = id.parse().context("ID")?;
                r.delete_policy(tenant, id).await?;
                println!("deleted {id}");
                Ok(())
            }
        },
        RetentionAction::Runs { limit, before } => {
            if !(1..=1000).contains(limit) {
                anyhow::bail!("--limit: must be between 1 and 1000");
            }
            let before = before.as_deref().map(str::parse::<RunId>).transpose().context("--before")?;
            let items: Vec<RunDto> = r.list_runs(tenant, before, *limit).await?.into_iter().map(Into::into).collect();
            let next_cursor = (items.len() == *limit as usize).then(|| items.last().map(|i| i.id.clone())).flatten();
            print(&RunsDto { items, next_cursor })
        }
    }
}

/// Runs `memlayer prune`: every policy of `tenant` (or of every tenant),
/// printing one line per policy and the receipts as JSON. On a terminal a
/// bar shows the messages deleted (those of deleted threads included) out
/// of what the policies selected when it started, with the threads, the
/// rate and the time left, as `reembed`, `export` and `import` do.
///
/// # Errors
/// A store failure (what earlier steps deleted stays deleted).
pub async fn prune(services: &Services, tenant: Option<&TenantId>, dry_run: bool) -> anyhow::Result<()> {
    let bar = progress::bar(None, progress::MESSAGES_AND);
    // The total costs a read of every rule's candidates: only for a bar
    // that is drawn, and not for a dry run, which is that read.
    if !dry_run && !bar.is_hidden() {
        bar.set_length(services.retention.estimate(tenant).await.context("counting what to prune")?.messages);
    }
    let runs = prune_with(services, tenant, dry_run, &bar).await;
    bar.finish_and_clear();
    let runs = runs?;
    services.index.close().await.context("saving the vector index")?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for run in &runs {
        let c = &run.counts;
        let policy = run.policy_id.map(|p| p.to_string()).unwrap_or_default();
        eprintln!(
            "{} policy {policy}: {verb} {} threads, {} messages, {} summaries, {} idempotency records",
            run.tenant, c.threads, c.messages, c.summaries, c.idempotency_records
        );
    }
    if runs.is_empty() {
        eprintln!("no retention policy");
    }
    let items: Vec<RunDto> = runs.into_iter().map(Into::into).collect();
    print(&crate::retention_routes::PruneDto { items })
}

/// Applies the policies as [`prune`] does, moving `bar` to the messages
/// deleted so far after each step (stretching it past an estimated
/// length), with the threads deleted as its message (the caller finishes
/// it).
///
/// # Errors
/// A store failure (what earlier steps deleted stays deleted).
pub async fn prune_with(
    services: &Services,
    tenant: Option<&TenantId>,
    dry_run: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<RetentionRun>> {
    let (messages, threads) = (AtomicU64::new(0), AtomicU64::new(0));
    let shown = bar.clone();
    let step = move |c: &RunCounts| {
        let done = messages.fetch_add(c.messages, Ordering::Relaxed) + c.messages;
        let gone = threads.fetch_add(c.threads, Ordering::Relaxed) + c.threads;
        progress::advance_to(&shown, done);
        shown.set_message(format!("{gone} threads"));
    };
    services.retention.prune_observed(tenant, dry_run, &step).await.context("pruning")
}

/// Runs `memlayer erase-resource ID`, printing the receipt.
///
/// # Errors
/// A bad id or a store failure (the erasure resumes at the next scheduled
/// run, or when this is run again).
pub async fn erase(services: &Services, tenant: &TenantId, resource: &str) -> anyhow::Result<()> {
    let resource = ResourceId::parse(resource.to_owned()).context("ID")?;
    let run = services.retention.erase_resource(tenant, &resource).await.context("erasing")?;
    services.index.close().await.context("saving the vector index")?;
    print(&RunDto::from(run))
}
