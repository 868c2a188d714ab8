//! `memlayer workflows …`: workflows on the database directly, printed as
//! the HTTP API's JSON. `execute --wait` runs the steps in this process
//! (sharing them with any server on the same database through the
//! leases) and prints each transition as it happens, then the workflow.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use memlayer_app::Services;
use memlayer_domain::{ResourceId, TenantId, WorkflowFilter, WorkflowId, WorkflowOp, WorkflowStatus};

use crate::workflow_routes::{NewWorkflowDto, WorkflowDto, WorkflowEventDto, WorkflowListDto, new_workflow};

/// `memlayer workflows` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum WorkflowAction {
    /// Create a draft workflow from a JSON file (`-` for stdin) shaped as
    /// `POST /api/workflows`'s body.
    Create {
        /// The file.
        file: String,
    },
    /// List workflows, newest first.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Only this resource.
        #[arg(long)]
        resource: Option<String>,
        /// 1 to 200.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A workflow with its steps.
    Get {
        /// Its id.
        id: String,
    },
    /// Start a draft workflow.
    Execute {
        /// Its id.
        id: String,
        /// Run its steps here and print each transition until it finishes.
        #[arg(long)]
        wait: bool,
    },
    /// Pause a running workflow.
    Pause {
        /// Its id.
        id: String,
    },
    /// Resume a paused workflow.
    Resume {
        /// Its id.
        id: String,
    },
    /// Cancel an unfinished workflow.
    Cancel {
        /// Its id.
        id: String,
    },
    /// Delete a workflow that is not running, with its steps, events and step threads.
    Delete {
        /// Its id.
        id: String,
    },
    /// A workflow's transitions, oldest first.
    Events {
        /// Its id.
        id: String,
    },
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs `memlayer workflows`.
///
/// # Errors
/// A bad argument or file, a refused operation (its message), a store failure.
pub async fn run(services: &Services, tenant: Option<&str>, action: WorkflowAction) -> anyhow::Result<ExitCode> {
    let tenant = match tenant {
        Some(t) => TenantId::parse(t.to_owned()).context("--tenant")?,
        None => services.memory.default_tenant().clone(),
    };
    let w = &services.workflows;
    let id = |s: &str| s.parse::<WorkflowId>().context("ID");
    match action {
        WorkflowAction::Create { file } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            let body: NewWorkflowDto = serde_json::from_str(&text).context("the workflow JSON")?;
            let new = new_workflow(body).map_err(|e| anyhow!("{}", e.message()))?;
            print(&WorkflowDto::from(&w.create(&tenant, new).await?))?;
        }
        WorkflowAction::List { status, resource, limit } => {
            let filter = WorkflowFilter {
                status: status.as_deref().map(WorkflowStatus::parse).transpose()?,
                resource: resource.map(ResourceId::parse).transpose()?,
                name: None,
            };
            let page = w.list(&tenant, filter, None, limit.clamp(1, memlayer_ports::MAX_WORKFLOW_PAGE)).await?;
            print(&WorkflowListDto {
                items: page.items.iter().map(Into::into).collect(),
                next_cursor: page.next_cursor,
            })?;
        }
        WorkflowAction::Get { id: i } => print(&WorkflowDto::from(&w.get(&tenant, id(&i)?).await?))?,
        WorkflowAction::Execute { id: i, wait } => {
            let wid = id(&i)?;
            let state = w.apply(&tenant, wid, WorkflowOp::Execute).await?;
            if !wait {
                print(&WorkflowDto::from(&state))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut after = 0;
            loop {
                w.run_once().await?;
                for e in w.events(&tenant, wid, after, 1_000).await? {
                    after = e.seq;
                    let e = WorkflowEventDto::from(e);
                    let name = e
                        .step_id
                        .as_deref()
                        .and_then(|s| state.steps.iter().find(|x| x.id.to_string() == s))
                        .map_or_else(|| "workflow".to_owned(), |s| format!("step {}", s.name));
                    eprintln!(
                        "{} {name}: {} → {} ({})",
                        e.at,
                        e.from.unwrap_or_default(),
                        e.to.unwrap_or_default(),
                        e.cause
                    );
                }
                let now = w.get(&tenant, wid).await?;
                if now.workflow.status.is_finished() {
                    print(&WorkflowDto::from(&now))?;
                    return Ok(if now.workflow.status == WorkflowStatus::Succeeded {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        WorkflowAction::Pause { id: i } => {
            print(&WorkflowDto::from(&w.apply(&tenant, id(&i)?, WorkflowOp::Pause).await?))?
        }
        WorkflowAction::Resume { id: i } => {
            print(&WorkflowDto::from(&w.apply(&tenant, id(&i)?, WorkflowOp::Resume).await?))?;
        }
        WorkflowAction::Cancel { id: i } => {
            print(&WorkflowDto::from(&w.apply(&tenant, id(&i)?, WorkflowOp::Cancel).await?))?;
        }
        WorkflowAction::Delete { id: i } => w.delete(&tenant, id(&i)?).await?,
        WorkflowAction::Events { id: i } => {
            let items: Vec<WorkflowEventDto> = w
                .events(&tenant, id(&i)?, 0, memlayer_ports::MAX_EVENT_PAGE)
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            print(&serde_json::json!({"items": items}))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
