//! `memlayer working-memory get|put|patch|versions|restore`: working memory
//! from the command line, through the same service as the HTTP API (the
//! agent's options, schema checks, merge patches retried on conflict).
//! Output is the same JSON as `/api/…/working-memory`.

use std::io::Read as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use memlayer_app::Services;
use memlayer_domain::{AgentName, ResourceId, TenantId, ThreadId, WorkingFormatKind, WorkingScope};
use serde::Serialize;
use serde_json::Value;

use crate::working_routes::{WorkingMemoryDto, WorkingVersionsDto};

/// Which document.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A resource's document (a user, across threads).
    #[arg(long)]
    pub resource: Option<String>,
    /// A thread's document (under the thread's agent's options).
    #[arg(long)]
    pub thread: Option<String>,
}

/// The catalog agent whose options apply to a resource's document.
#[derive(Debug, Args)]
pub struct AgentArg {
    /// With `--resource`: the catalog agent whose working-memory options
    /// apply (format, JSON Schema, template, versions kept).
    #[arg(long, requires = "resource")]
    pub agent: Option<String>,
}

/// `memlayer working-memory …`.
#[derive(Debug, Subcommand)]
pub enum WorkingAction {
    /// Show the document (never written: version 0, with the template or `{}`).
    Get {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        agent: AgentArg,
    },
    /// Replace the document if `--expected-version` is current (0: never written).
    Put {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        agent: AgentArg,
        /// The new document: JSON, or with `--format markdown` the text;
        /// `-` reads it from standard input.
        #[arg(long, allow_hyphen_values = true)]
        content: String,
        /// `json` or `markdown` (default: the agent's format, else `json`).
        #[arg(long)]
        format: Option<String>,
        /// The version this write replaces.
        #[arg(long)]
        expected_version: u64,
    },
    /// Apply a JSON merge patch (RFC 7396) atomically, retried against
    /// concurrent writers.
    Patch {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        agent: AgentArg,
        /// The merge patch, as JSON (`-`: from standard input).
        #[arg(long, allow_hyphen_values = true)]
        patch: String,
    },
    /// List the kept versions, newest first.
    Versions {
        #[command(flatten)]
        target: Target,
    },
    /// Make a kept version current again, as a new version.
    Restore {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        agent: AgentArg,
        /// The kept version to restore.
        version: u64,
    },
}

fn scope(target: &Target) -> anyhow::Result<WorkingScope> {
    Ok(match (&target.resource, &target.thread) {
        (Some(r), _) => WorkingScope::Resource(ResourceId::parse(r.clone()).context("--resource")?),
        (None, Some(t)) => WorkingScope::Thread(t.parse::<ThreadId>().context("--thread")?),
        (None, None) => anyhow::bail!("name the document: --resource R or --thread ID"),
    })
}

fn agent(arg: &AgentArg) -> anyhow::Result<Option<AgentName>> {
    arg.agent.clone().map(AgentName::parse).transpose().context("--agent")
}

/// The argument's text, or standard input for `-`.
fn text(arg: &str) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
    Ok(s)
}

fn print(v: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    // An error, not a panic, when stdout is closed early (`| head`).
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(v)?).context("writing to stdout")?;
    Ok(())
}

/// Runs one `working-memory` command as `tenant`.
///
/// # Errors
/// What the service refused (the same rules and messages as over HTTP), or
/// unreadable arguments.
pub async fn run(services: &Services, tenant: &TenantId, action: &WorkingAction) -> anyhow::Result<()> {
    let w = &services.working;
    match action {
        WorkingAction::Get { target, agent: a } => {
            print(&WorkingMemoryDto::from(w.get(tenant, &scope(target)?, agent(a)?.as_ref()).await?))
        }
        WorkingAction::Put { target, agent: a, content, format, expected_version } => {
            let format = format.as_deref().map(|f| WorkingFormatKind::parse("--format", f)).transpose()?;
            let content = text(content)?;
            let value = if format == Some(WorkingFormatKind::Markdown) {
                Value::String(content)
            } else {
                serde_json::from_str(&content)
                    .context("--content is not JSON; for Markdown text pass --format markdown")?
            };
            let doc = w.put(tenant, &scope(target)?, agent(a)?.as_ref(), format, value, *expected_version).await?;
            print(&WorkingMemoryDto::from(doc))
        }
        WorkingAction::Patch { target, agent: a, patch } => {
            let patch: Value = serde_json::from_str(&text(patch)?).context("--patch is not JSON")?;
            print(&WorkingMemoryDto::from(w.patch(tenant, &scope(target)?, agent(a)?.as_ref(), &patch).await?))
        }
        WorkingAction::Versions { target } => {
            let items = w.versions(tenant, &scope(target)?).await?.into_iter().map(Into::into).collect();
            print(&WorkingVersionsDto { items })
        }
        WorkingAction::Restore { target, agent: a, version } => {
            print(&WorkingMemoryDto::from(w.restore(tenant, &scope(target)?, agent(a)?.as_ref(), *version).await?))
        }
    }
}
