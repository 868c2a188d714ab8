//! `memlayer models|agents|tools|settings …`: the catalog from
//! the command line. Output is the same JSON as the HTTP API's.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use memlayer_app::Services;
use memlayer_domain::{
    AgentId, AgentName, CatalogEntity, ListCursor, ListQuery, MemoryOptions, ModelId, NewAgent, NewModel, NewTool,
    PageSize, SettingName, TenantId, ToolId,
};
use serde::Serialize;
use serde_json::Value;

use crate::dto::{AgentDto, ModelDto, PageDto, SettingDto, ToolDto};

/// Listing options shared by `models list`, `agents list` and `tools list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// `FIELD:OP:VALUE`, repeatable (e.g. `provider:eq:openai`).
    #[arg(long)]
    pub filter: Vec<String>,
    /// `FIELD` or `-FIELD` (descending).
    #[arg(long, allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Page size (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// A previous page's `next_cursor`.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `memlayer models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// List models.
    List(ListArgs),
    /// Show one model.
    Get {
        /// Model id.
        id: String,
    },
    /// Create a model.
    Create {
        /// Model name (`gpt-4o`).
        #[arg(long)]
        name: String,
        /// Provider (`openai`).
        #[arg(long)]
        provider: String,
        /// Context window, in tokens.
        #[arg(long)]
        context_window: u32,
        /// Most output tokens.
        #[arg(long)]
        max_output_tokens: u32,
        /// Price per million input tokens.
        #[arg(long, default_value_t = 0.0)]
        input_price: f64,
        /// Price per million output tokens.
        #[arg(long, default_value_t = 0.0)]
        output_price: f64,
        /// Make it the tenant's default model.
        #[arg(long)]
        default: bool,
    },
    /// Delete a model no agent uses.
    Delete {
        /// Model id.
        id: String,
    },
}

/// `memlayer agents …`.
#[derive(Debug, Subcommand)]
pub enum AgentsAction {
    /// List agents.
    List(ListArgs),
    /// Show one agent.
    Get {
        /// Agent id.
        id: String,
    },
    /// Show an agent's tools, whole.
    Tools {
        /// Agent id.
        id: String,
    },
    /// Create an agent.
    Create {
        /// Name; threads name the agent by it.
        #[arg(long)]
        name: String,
        /// The id of a model in the catalog.
        #[arg(long)]
        model_id: String,
        /// System prompt.
        #[arg(long, default_value = "")]
        system_prompt: String,
        /// The id of a tool in the catalog, repeatable, in order.
        #[arg(long = "tool-id")]
        tool_ids: Vec<String>,
        /// Recent messages loaded by default.
        #[arg(long)]
        last_n: Option<u32>,
        /// Search hits within a thread by default.
        #[arg(long)]
        top_k: Option<u32>,
        /// Token budget.
        #[arg(long)]
        token_budget: Option<u32>,
        /// Working-memory options, as the HTTP API's `memory.working_memory`
        /// (`{"scope": "thread", "format": "json", "schema": {…}, "versions": 10}`).
        #[arg(long, value_name = "JSON")]
        working_memory: Option<String>,
    },
    /// Delete an agent.
    Delete {
        /// Agent id.
        id: String,
    },
}

/// `memlayer tools …`.
#[derive(Debug, Subcommand)]
pub enum ToolsAction {
    /// List tools.
    List(ListArgs),
    /// Show one tool.
    Get {
        /// Tool id.
        id: String,
    },
    /// Create a tool.
    Create {
        /// Function name.
        #[arg(long)]
        name: String,
        /// What it does.
        #[arg(long, default_value = "")]
        description: String,
        /// JSON Schema of its parameters (an object schema).
        #[arg(long)]
        parameters: String,
    },
    /// Delete a tool no agent lists.
    Delete {
        /// Tool id.
        id: String,
    },
}

/// `memlayer settings …`.
#[derive(Debug, Subcommand)]
pub enum SettingsAction {
    /// Print a setting's JSON value; absent: `--default`, or fail.
    Get {
        /// Category.
        category: String,
        /// Key.
        key: String,
        /// JSON printed when the setting is absent.
        #[arg(long)]
        default: Option<String>,
    },
    /// Set a setting to a JSON value.
    Set {
        /// Category.
        category: String,
        /// Key.
        key: String,
        /// Any JSON (`42`, `"dark"`, `{"a": 1}`).
        value: String,
    },
    /// Delete a setting.
    Delete {
        /// Category.
        category: String,
        /// Key.
        key: String,
    },
}

/// Which catalog command.
#[derive(Debug)]
pub enum CatalogCommand<'a> {
    /// Models.
    Models(&'a ModelsAction),
    /// Agents.
    Agents(&'a AgentsAction),
    /// Tools.
    Tools(&'a ToolsAction),
    /// Settings.
    Settings(&'a SettingsAction),
}

fn print(v: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    // An error, not a panic, when stdout is closed early (`| head`).
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(v)?).context("writing to stdout")?;
    Ok(())
}

fn query(entity: CatalogEntity, tenant: &TenantId, args: &ListArgs) -> anyhow::Result<ListQuery> {
    let mut q = ListQuery::new(entity).limit(PageSize::new(args.limit)?);
    for f in &args.filter {
        q = q.filter_expr(f)?;
    }
    if let Some(s) = &args.sort {
        q = q.sort_by(s)?;
    }
    if let Some(c) = &args.cursor {
        q = q.resume(tenant, &ListCursor::decode(c)?)?;
    }
    Ok(q)
}

fn json_arg(what: &str, s: &str) -> anyhow::Result<Value> {
    serde_json::from_str(s).with_context(|| format!("{what} is not JSON"))
}

/// Runs one catalog command for `tenant`.
///
/// # Errors
/// Whatever the store or the input validation refused.
pub async fn run(services: &Services, tenant: &TenantId, command: CatalogCommand<'_>) -> anyhow::Result<()> {
    let c = &services.catalog;
    match command {
        CatalogCommand::Models(action) => match action {
            ModelsAction::List(args) => {
                let page = c.list_models(tenant, &query(CatalogEntity::Models, tenant, args)?).await?;
                print(&PageDto::<ModelDto>::from(page))
            }
            ModelsAction::Get { id } => print(&ModelDto::from(c.get_model(tenant, id.parse::<ModelId>()?).await?)),
            ModelsAction::Create {
                name,
                provider,
                context_window,
                max_output_tokens,
                input_price,
                output_price,
                default,
            } => {
                let new = NewModel {
                    name: name.clone(),
                    provider: provider.clone(),
                    context_window: *context_window,
                    max_output_tokens: *max_output_tokens,
                    input_price: *input_price,
                    output_price: *output_price,
                    is_default: *default,
                };
                print(&ModelDto::from(c.create_model(tenant, new).await?))
            }
            ModelsAction::Delete { id } => {
                c.delete_model(tenant, id.parse::<ModelId>()?).await?;
                println!("deleted model {id}");
                Ok(())
            }
        },
        CatalogCommand::Agents(action) => match action {
            AgentsAction::List(args) => {
                let page = c.list_agents(tenant, &query(CatalogEntity::Agents, tenant, args)?).await?;
                print(&PageDto::<AgentDto>::from(page))
            }
            AgentsAction::Get { id } => print(&AgentDto::from(c.get_agent(tenant, id.parse::<AgentId>()?).await?)),
            AgentsAction::Tools { id } => {
                let tools = c.agent_tools(tenant, id.parse::<AgentId>()?).await?;
                print(&tools.into_iter().map(ToolDto::from).collect::<Vec<_>>())
            }
            AgentsAction::Create {
                name,
                model_id,
                system_prompt,
                tool_ids,
                last_n,
                top_k,
                token_budget,
                working_memory,
            } => {
                let working_memory = working_memory
                    .as_deref()
                    .map(|text| -> anyhow::Result<memlayer_domain::WorkingMemoryOptions> {
                        let dto: crate::dto::WorkingMemoryOptionsDto =
                            serde_json::from_str(text).context("--working-memory")?;
                        Ok(dto.try_into()?)
                    })
                    .transpose()?;
                let new = NewAgent {
                    name: AgentName::parse(name.clone())?,
                    model_id: model_id.parse()?,
                    system_prompt: system_prompt.clone(),
                    tool_ids: tool_ids.iter().map(|t| t.parse::<ToolId>()).collect::<Result<_, _>>()?,
                    memory: MemoryOptions {
                        last_n: *last_n,
                        top_k: *top_k,
                        token_budget: *token_budget,
                        working_memory,
                        context: None,
                    },
                    runner: None,
                };
                print(&AgentDto::from(c.create_agent(tenant, new).await?))
            }
            AgentsAction::Delete { id } => {
                c.delete_agent(tenant, id.parse::<AgentId>()?).await?;
                println!("deleted agent {id}");
                Ok(())
            }
        },
        CatalogCommand::Tools(action) => match action {
            ToolsAction::List(args) => {
                let page = c.list_tools(tenant, &query(CatalogEntity::Tools, tenant, args)?).await?;
                print(&PageDto::<ToolDto>::from(page))
            }
            ToolsAction::Get { id } => print(&ToolDto::from(c.get_tool(tenant, id.parse::<ToolId>()?).await?)),
            ToolsAction::Create { name, description, parameters } => {
                let new = NewTool {
                    name: name.clone(),
                    description: description.clone(),
                    parameters: json_arg("--parameters", parameters)?,
                };
                print(&ToolDto::from(c.create_tool(tenant, new).await?))
            }
            ToolsAction::Delete { id } => {
                c.delete_tool(tenant, id.parse::<ToolId>()?).await?;
                println!("deleted tool {id}");
                Ok(())
            }
        },
        CatalogCommand::Settings(action) => match action {
            SettingsAction::Get { category, key, default } => {
                let (cat, k) = (SettingName::category(category.clone())?, SettingName::key(key.clone())?);
                let default = default.as_deref().map(|d| json_arg("--default", d)).transpose()?;
                match (c.get_setting(tenant, &cat, &k).await?, default) {
                    (Some(s), _) => print(&s.value),
                    (None, Some(d)) => print(&d),
                    (None, None) => anyhow::bail!("setting {category}/{key} is not set (pass --default JSON)"),
                }
            }
            SettingsAction::Set { category, key, value } => {
                let (cat, k) = (SettingName::category(category.clone())?, SettingName::key(key.clone())?);
                let stored = c.put_setting(tenant, &cat, &k, json_arg("the value", value)?).await?;
                print(&SettingDto::from(stored))
            }
            SettingsAction::Delete { category, key } => {
                let (cat, k) = (SettingName::category(category.clone())?, SettingName::key(key.clone())?);
                c.delete_setting(tenant, &cat, &k).await?;
                println!("deleted setting {category}/{key}");
                Ok(())
            }
        },
    }
}
