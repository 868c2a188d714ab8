//! The `memlayer` command line: `serve`, `migrate up|down|status`, `doctor`,
//! `search`, `reembed`, the catalog (`models`, `agents`,
//! `tools`, `settings`), API keys (`keys`), working memory
//! (`working-memory`), thread summaries (`summary`), a thread's context
//! (`context`), retention (`retention`, `prune`, `erase-resource`), and
//! exports and imports (`export`, `import`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use figment::providers::Serialized;
use memlayer_app::Config;

use crate::cli_catalog::CatalogCommand;

/// memlayer: the memory and persistence layer for AI agents.
#[derive(Debug, Parser)]
#[command(name = "memlayer", version, about)]
pub struct Cli {
    /// A TOML configuration file (also `MEMLAYER_CONFIG`).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded database (also `MEMLAYER_DATA_DIR`).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Listen address, HOST:PORT (also `MEMLAYER_SERVER__ADDR`; default 127.0.0.1:8080).
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<SocketAddr>,
    },
    /// Apply, revert or list schema migrations.
    Migrate {
        /// Direction.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Check configuration, database, model and runtime, and say what to fix.
    Doctor,
    /// Search stored messages by meaning, words, or both.
    Search {
        /// What to look for.
        query: String,
        /// Only this thread.
        #[arg(long, conflicts_with = "resource")]
        thread: Option<String>,
        /// Only this resource's threads.
        #[arg(long)]
        resource: Option<String>,
        /// `vector`, `lexical` or `hybrid`.
        #[arg(long, default_value = "hybrid")]
        mode: memlayer_domain::SearchMode,
        /// How many hits (default: with --thread, the thread's `_memory.top_k`
        /// from its agent, else 10).
        #[arg(long)]
        top_k: Option<u32>,
        /// Tenant (default: the configured default tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Fork a thread: a new thread with its messages up to --at-seq (default
    /// all), their vectors, agent states and working memory; prints the new
    /// thread as JSON.
    Fork {
        /// The source thread's id.
        thread: String,
        /// The last sequence number copied (1 up to the thread's last).
        #[arg(long)]
        at_seq: Option<i64>,
        /// The new thread's title (default: the source's, followed by " (fork)").
        #[arg(long)]
        title: Option<String>,
        /// Tenant (default: the configured default tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// What a tenant stores (live threads, messages, their bytes) against its
    /// storage quota, as JSON (the same as `GET /api/usage`).
    Usage {
        /// Tenant (default: the configured default tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Embed every message lacking a vector of the current model (after a
    /// model change, or to catch up); resumable: rerun after an interruption.
    Reembed {
        /// Afterwards, delete vectors of other models.
        #[arg(long)]
        prune: bool,
    },
    /// The catalog's models: list, get, create, delete.
    Models {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_catalog::ModelsAction,
    },
    /// The catalog's agents: list, get, tools, create, delete.
    Agents {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_catalog::AgentsAction,
    },
    /// The catalog's tools: list, get, create, delete.
    Tools {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_catalog::ToolsAction,
    },
    /// The catalog's settings: get (with a default), set, delete.
    Settings {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_catalog::SettingsAction,
    },
    /// A thread's summary: show it with its coverage (default), summarise
    /// now (--now), or list its versions (--versions).
    Summary(crate::cli_summary::SummaryArgs),
    /// API keys: create (prints the key once), list, revoke.
    Keys {
        /// The tenant the keys act for (required: a key's tenant is never implied).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_keys::KeysAction,
    },
    /// Working memory of a resource or a thread: get, put, patch, versions, restore.
    WorkingMemory {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_working::WorkingAction,
    },
    /// A thread's assembled context, as `POST /api/threads/{id}/context`
    /// returns it.
    Context(crate::cli_context::ContextArgs),
    /// Retention policies (list, get, create, update, delete) and receipts
    /// (`runs`).
    Retention {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_retention::RetentionAction,
    },
    /// Apply the retention policies now, as the server's scheduler does:
    /// print what would be deleted (--dry-run) or delete it (--apply).
    Prune {
        /// Only report what would be deleted.
        #[arg(long, conflicts_with = "apply", required_unless_present = "apply")]
        dry_run: bool,
        /// Delete.
        #[arg(long)]
        apply: bool,
        /// Only this tenant's policies (default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Erase everything of one resource (its threads, pinned ones too, and
    /// working memory); prints the receipt.
    EraseResource {
        /// The resource.
        id: String,
        /// Tenant (default: the configured default tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Export a tenant's memory (or a resource's, or a thread's) as JSON Lines
    /// (docs/EXPORT.md), as `GET /api/export` does.
    Export(crate::cli_transfer::ExportArgs),
    /// Import an export (ids kept; importing twice changes nothing), as
    /// `POST /api/import` does.
    Import(crate::cli_transfer::ImportArgs),
    /// Workflows: create, list, get, execute (--wait runs and shows
    /// progress), pause, resume, cancel, delete, events.
    Workflows {
        /// Tenant (default: the configured default tenant).
        #[arg(long, global = true)]
        tenant: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::cli_workflows::WorkflowAction,
    },
}

/// Migration actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the newest applied migrations.
    Down {
        /// How many to revert.
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// List migrations and whether they are applied.
    Status,
}

/// Entry point of the binary.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli, addr: Option<SocketAddr>) -> anyhow::Result<Config> {
    let mut fig = Config::figment(cli.config.as_deref());
    if let Some(dir) = &cli.data_dir {
        fig = fig.merge(Serialized::default("data_dir", dir));
    }
    if let Some(addr) = addr {
        fig = fig.merge(Serialized::default("server.addr", addr.to_string()));
    }
    Ok(Config::from_figment(&fig)?)
}

fn init_tracing(config: &Config) {
    init_tracing_with(config, None);
}

/// Logs (`log.*`) and, with `self_tracing`, memlayer's own spans into the
/// observability store (`observability.self_tracing.*`): one registry, each
/// layer with its own filter, so `RUST_LOG=warn` quiets the logs without
/// hiding the spans the self-tracing layer records.
fn init_tracing_with(config: &Config, self_tracing: Option<&memlayer_app::SelfTracing>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    // Colours only on a terminal: piped into a file or a log collector,
    // escape codes would garble the lines.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let logs = if config.log.format == memlayer_app::LogFormat::Json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let registry = tracing_subscriber::registry().with(logs);
    let _ = match self_tracing {
        Some(st) => registry.with(st.layer()).try_init(),
        None => registry.try_init(),
    };
}

/// Runs one parsed command.
///
/// # Errors
/// Whatever stopped the command, with context.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { addr } => {
            let config = load_config(&cli, *addr)?;
            let self_tracing = memlayer_app::SelfTracing::new(&config.observability.self_tracing)
                .filter(|_| config.observability.enabled);
            init_tracing_with(&config, self_tracing.as_ref());
            let addr = config.server.addr;
            // Before opening anything: a public address without
            // authentication is refused, saying what to set.
            config.auth.check_exposure(addr).map_err(anyhow::Error::msg)?;
            if config.auth.mode.has(memlayer_app::AuthMode::None) {
                tracing::warn!(%addr, "no authentication (auth.mode = none): every local caller may read and change \
                    every tenant's memory; set auth.mode to api_key or jwt before exposing this server");
            }
            let services = memlayer_app::build(config).await?;
            let writer = self_tracing.map(|st| st.start(&services)).transpose().map_err(anyhow::Error::msg)?;
            let served = crate::server::serve(services, addr, |bound| {
                println!("memlayer listening on http://{bound}");
            })
            .await
            .with_context(|| format!("serving on {addr}"));
            if let Some(writer) = writer {
                // What the last requests traced is written before the exit.
                let stats = writer.stop().await;
                tracing::debug!(?stats, "self-tracing writer stopped");
            }
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { action } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let db = memlayer_app::open_database(&config).await?;
            match action {
                MigrateAction::Up => {
                    let applied = db.migrate_up().await.context("applying migrations")?;
                    if applied.is_empty() {
                        println!("up to date ({})", db.describe());
                    }
                    for m in applied {
                        println!("applied {:>4} {}", m.version, m.name);
                    }
                }
                MigrateAction::Down { steps } => {
                    let reverted = db.migrate_down(*steps).await.context("reverting migrations")?;
                    if reverted.is_empty() {
                        println!("nothing to revert");
                    }
                    for m in reverted {
                        println!("reverted {:>4} {}", m.version, m.name);
                    }
                }
                MigrateAction::Status => {
                    println!("{}", db.describe());
                    for m in db.migration_status().await.context("reading migration status")? {
                        let state = m.applied_at.map_or_else(|| "pending".to_owned(), |t| format!("applied {t}"));
                        println!("{:>4} {:<32} {state}", m.version, m.name);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => Ok(doctor(&cli).await),
        Command::Models { tenant, action } => catalog_command(&cli, tenant, CatalogCommand::Models(action)).await,
        Command::Agents { tenant, action } => catalog_command(&cli, tenant, CatalogCommand::Agents(action)).await,
        Command::Tools { tenant, action } => catalog_command(&cli, tenant, CatalogCommand::Tools(action)).await,
        Command::Settings { tenant, action } => catalog_command(&cli, tenant, CatalogCommand::Settings(action)).await,
        Command::Workflows { tenant, action } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            crate::cli_workflows::run(&services, tenant.as_deref(), action.clone()).await
        }
        Command::Summary(args) => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            crate::cli_summary::run(&services, args).await
        }
        Command::Keys { tenant, action } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let Some(tenant) = tenant else {
                anyhow::bail!("--tenant is required: a key acts for exactly one tenant, never an implied one");
            };
            let tenant = memlayer_domain::TenantId::parse(tenant.clone()).context("--tenant")?;
            let keys = memlayer_app::open_keys(&config).await?;
            crate::cli_keys::run(&keys, &tenant, action).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::WorkingMemory { tenant, action } => {
            let mut config = load_config(&cli, None)?;
            init_tracing(&config);
            // Working memory never embeds: skip loading the model.
            config.embedding.enabled = false;
            let services = memlayer_app::build(config).await?;
            let tenant = match tenant {
                Some(t) => memlayer_domain::TenantId::parse(t.clone())?,
                None => services.memory.default_tenant().clone(),
            };
            crate::cli_working::run(&services, &tenant, action).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retention { tenant, action } => {
            let mut config = load_config(&cli, None)?;
            init_tracing(&config);
            // Policies and receipts never embed: skip loading the model.
            config.embedding.enabled = false;
            let services = memlayer_app::build(config).await?;
            let tenant = match tenant {
                Some(t) => memlayer_domain::TenantId::parse(t.clone()).context("--tenant")?,
                None => services.memory.default_tenant().clone(),
            };
            crate::cli_retention::run(&services, &tenant, action).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { dry_run, apply: _, tenant } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            let tenant = tenant.clone().map(memlayer_domain::TenantId::parse).transpose().context("--tenant")?;
            crate::cli_retention::prune(&services, tenant.as_ref(), *dry_run).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::EraseResource { id, tenant } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            let tenant = match tenant {
                Some(t) => memlayer_domain::TenantId::parse(t.clone()).context("--tenant")?,
                None => services.memory.default_tenant().clone(),
            };
            crate::cli_retention::erase(&services, &tenant, id).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Context(args) => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            crate::cli_context::run(&services.context, services.memory.default_tenant(), args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Search { query, thread, resource, mode, top_k, tenant } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            let tenant = match tenant {
                Some(t) => memlayer_domain::TenantId::parse(t.clone())?,
                None => services.memory.default_tenant().clone(),
            };
            let scope = match (thread, resource) {
                (Some(t), _) => memlayer_domain::SearchScope::Thread(t.parse()?),
                (None, Some(r)) => {
                    memlayer_domain::SearchScope::Resource(memlayer_domain::ResourceId::parse(r.clone())?)
                }
                (None, None) => memlayer_domain::SearchScope::Tenant,
            };
            let query = memlayer_domain::SearchQuery::new(
                query.clone(),
                scope,
                *mode,
                top_k.map(memlayer_domain::TopK::new).transpose()?,
                memlayer_domain::Window::default(),
                None,
            )?;
            let results = services.search.search(&tenant, &query).await?;
            let plan = &results.plan;
            println!(
                "{} hits ({} mode, index {}, {} pending, {} other model)",
                results.hits.len(),
                query.mode,
                plan.vector_index,
                plan.pending,
                plan.other_model
            );
            for hit in results.hits {
                let m = &hit.message;
                let text: String = m.content.chars().take(120).collect();
                println!("{:>8.4}  {} #{:<5} {:<9} {text}", hit.score, m.thread_id, m.seq, m.role.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fork { thread, at_seq, title, tenant } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            // Embeddings stay on: the copied vectors go into the vector
            // index (pgvector's table, the HNSW snapshot) as the server's do.
            let services = memlayer_app::build(config).await?;
            let tenant = match tenant {
                Some(t) => memlayer_domain::TenantId::parse(t.clone())?,
                None => services.memory.default_tenant().clone(),
            };
            let source: memlayer_domain::ThreadId = thread.parse().context("THREAD")?;
            let title = title.clone().map(memlayer_domain::Title::parse).transpose().context("--title")?;
            let fork = memlayer_domain::ForkThread::new(*at_seq, title).context("--at-seq")?;
            let forked = services.memory.fork_thread(&tenant, source, fork).await?;
            let dto = crate::dto::ThreadDto::from(forked);
            println!("{}", serde_json::to_string_pretty(&dto)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { tenant } => {
            let mut config = load_config(&cli, None)?;
            init_tracing(&config);
            // Reading counters never embeds: skip loading the model.
            config.embedding.enabled = false;
            let services = memlayer_app::build(config).await?;
            let tenant = match tenant {
                Some(t) => memlayer_domain::TenantId::parse(t.clone()).context("--tenant")?,
                None => services.memory.default_tenant().clone(),
            };
            let usage = crate::dto::UsageDto::from(services.memory.usage(&tenant).await?);
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&usage)?).context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            let mut config = load_config(&cli, None)?;
            init_tracing(&config);
            // Reading never embeds: skip loading the model (the header names
            // the configured model all the same).
            config.embedding.enabled = false;
            let services = memlayer_app::build(config).await?;
            crate::cli_transfer::export(&services, args).await
        }
        Command::Import(args) => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            // Embeddings stay on: imported vectors go into the vector index
            // as the server's do.
            let services = memlayer_app::build(config).await?;
            crate::cli_transfer::import(&services, args).await
        }
        Command::Reembed { prune } => {
            let config = load_config(&cli, None)?;
            init_tracing(&config);
            let services = memlayer_app::build(config).await?;
            if let Some(problem) = &services.embedder_problem {
                anyhow::bail!("cannot embed: {problem}");
            }
            let model = services.search.embedder_info().model;
            let queued = services.embeddings.enqueue_missing(model.clone()).await.context("scheduling messages")?;
            println!("{model}: {queued} messages scheduled (plus any already pending)");
            let bar = crate::progress::bar(Some(queued), crate::progress::MESSAGES);
            let mut done = 0u64;
            loop {
                let round = services.worker.run_once().await.context("embedding")?;
                if round.failed > 0 {
                    bar.abandon();
                    anyhow::bail!("embedding failed for {} messages; they stay queued, rerun to resume", round.failed);
                }
                if round.embedded == 0 {
                    break;
                }
                done += round.embedded as u64;
                crate::progress::advance_to(&bar, done);
                if bar.is_hidden() {
                    // Not a terminal (a log, a pipe): a line per batch instead.
                    println!("{done} messages embedded");
                }
            }
            bar.finish();
            println!("embedded {done} messages with {model}");
            if *prune {
                let pruned = services.embeddings.prune_vectors(model).await.context("pruning old vectors")?;
                println!("pruned {pruned} vectors of other models");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn catalog_command(cli: &Cli, tenant: &Option<String>, command: CatalogCommand<'_>) -> anyhow::Result<ExitCode> {
    let mut config = load_config(cli, None)?;
    init_tracing(&config);
    // Catalog commands never embed: skip loading the model.
    config.embedding.enabled = false;
    let services = memlayer_app::build(config).await?;
    let tenant = match tenant {
        Some(t) => memlayer_domain::TenantId::parse(t.clone())?,
        None => services.memory.default_tenant().clone(),
    };
    crate::cli_catalog::run(&services, &tenant, command).await?;
    Ok(ExitCode::SUCCESS)
}

/// Checks configuration, data directory and database, printing one line per
/// check and what to fix. Fails when any check fails.
async fn doctor(cli: &Cli) -> ExitCode {
    let mut failed = false;
    let mut report = |ok: bool, what: &str, detail: String| {
        failed |= !ok;
        println!("[{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
    };
    let config = match load_config(cli, None) {
        Ok(c) => {
            report(true, "configuration", "loaded (defaults, file, environment)".to_owned());
            c
        }
        Err(e) => {
            report(false, "configuration", format!("{e:#}; fix the named key in the file or environment"));
            return ExitCode::FAILURE;
        }
    };
    if config.database.url.is_none() {
        let dir = &config.data_dir;
        let writable = std::fs::create_dir_all(dir).and_then(|()| {
            let probe = dir.join(".memlayer-doctor");
            std::fs::write(&probe, b"ok")?;
            std::fs::remove_file(probe)
        });
        match writable {
            Ok(()) => report(true, "data directory", format!("{} is writable", dir.display())),
            Err(e) => report(
                false,
                "data directory",
                format!("{}: {e}; set --data-dir or MEMLAYER_DATA_DIR to a writable directory", dir.display()),
            ),
        }
    }
    match memlayer_app::open_database(&config).await.map_err(anyhow::Error::from) {
        Err(e) => report(
            false,
            "database",
            if config.is_postgres() {
                format!(
                    "{e:#}; check DATABASE_URL / database.url (host, port, user, database name) and that the server runs"
                )
            } else {
                format!("{e:#}; check database.url / LIBSQL_DATABASE_URL")
            },
        ),
        Ok(db) => {
            match db.ping().await {
                Ok(()) => report(true, "database", format!("{} is reachable", db.describe())),
                Err(e) => report(false, "database", format!("{}: {e}", db.describe())),
            }
            match db.migration_status().await {
                Ok(list) => {
                    let pending = list.iter().filter(|m| m.applied_at.is_none()).count();
                    if pending == 0 {
                        report(true, "migrations", format!("all {} applied", list.len()));
                    } else if config.database.auto_migrate {
                        report(
                            true,
                            "migrations",
                            format!("{pending} pending; `memlayer serve` applies them at start"),
                        );
                    } else {
                        report(
                            false,
                            "migrations",
                            format!(
                                "{pending} of {} pending; run `memlayer migrate up` (serve applies them too)",
                                list.len()
                            ),
                        );
                    }
                }
                Err(e) => report(false, "migrations", format!("cannot read status: {e}")),
            }
            match db.durability().await {
                Ok(settings) if !settings.is_empty() => {
                    let line: Vec<String> = settings.iter().map(|s| format!("{}={}", s.name, s.value)).collect();
                    report(true, "durability", line.join(", "));
                }
                Ok(_) => {}
                Err(e) => report(false, "durability", format!("cannot read the settings: {e}")),
            }
            match db.warnings().await {
                Ok(warnings) => {
                    for w in warnings {
                        println!("[warn] database: {w}");
                    }
                }
                Err(e) => report(false, "database", format!("cannot check the set-up: {e}")),
            }
        }
    }
    if config.embedding.enabled {
        let cache = config.embedding.cache_dir.clone().unwrap_or_else(memlayer_app::default_cache_dir);
        let embedder = memlayer_app::probe_embedder(&cache);
        match embedder {
            Ok(info) => {
                report(true, "embedding model", format!("{} ({} dims) in {}", info.model, info.dim, cache.display()))
            }
            Err(problem) => report(false, "embedding model", problem),
        }
    } else {
        report(true, "embedding model", "disabled (embedding.enabled = false)".to_owned());
    }
    match config.auth.check_exposure(config.server.addr) {
        Ok(()) => report(true, "authentication", format!("auth.mode = {}", config.auth.mode)),
        Err(e) => report(false, "authentication", e),
    }
    match memlayer_app::Coordinator::new(&config.redis) {
        Ok(None) => report(true, "redis", "not configured: limits and cache invalidation are per server".to_owned()),
        Ok(Some(redis)) => match redis.ping().await {
            Ok(()) => report(true, "redis", "reachable: limits and catalog invalidations are shared".to_owned()),
            Err(e) => println!(
                "[warn] redis: unreachable ({e}); memlayer still serves, with per-server limits and the cache TTL \
                 until it is back"
            ),
        },
        Err(e) => report(false, "redis", e),
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
