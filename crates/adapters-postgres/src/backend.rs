//! The connection pool and the per-transaction tenant and resource settings.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction};
use memlayer_adapters_sql::migrate::DatabaseEngine;
use memlayer_domain::Reach;
use memlayer_ports::{DurabilitySetting, StoreError};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PgConfig, describe_url};
use crate::error::{Context as _, DriverError};

/// Whose rows a transaction may see. Row-level security policies compare
/// every row's `tenant` with the transaction's `memlayer.tenant` setting,
/// and (migration 12) a thread's `resource_id`, and every row of a thread,
/// with `memlayer.resource` when it is not empty; [`Access::All`] (`*`,
/// which no tenant id can contain, and no resource) is for the background
/// work that spans tenants (embedding jobs, index maintenance, migrations).
#[derive(Clone, Copy)]
pub(crate) enum Access<'a> {
    /// The rows `who` reaches: its tenant's, and only its resource's
    /// threads (with their messages, vectors, jobs and states) when it is
    /// bound to one.
    Of(&'a dyn Reach),
    /// Every tenant's rows.
    All,
}

impl std::fmt::Debug for Access<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Access").field(&self.tenant()).field(&self.resource()).finish()
    }
}

impl Access<'_> {
    /// `memlayer.tenant`.
    pub(crate) fn tenant(&self) -> &str {
        match self {
            Access::Of(who) => who.tenant().as_str(),
            Access::All => ALL_TENANTS,
        }
    }

    /// `memlayer.resource`: empty for the whole tenant.
    fn resource(&self) -> &str {
        match self {
            Access::Of(who) => who.resource().map_or("", |r| r.as_str()),
            Access::All => "",
        }
    }
}

/// The `memlayer.tenant` value that admits every tenant.
pub(crate) const ALL_TENANTS: &str = "*";

/// Threads, messages, agent state, embeddings and migrations on one
/// Postgres database, through a pool of connections.
#[derive(Clone)]
pub struct PgBackend {
    pool: Pool,
    description: String,
    /// `statement_timeout` of every transaction [`begin`] opens, in
    /// milliseconds, as `set_config` takes it; `None`: left alone.
    statement_timeout: Option<Arc<str>>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend").field("database", &self.description).finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Builds the pool and checks that the server answers and that the role
    /// does not bypass row-level security (unless
    /// [`PgConfig::allow_rls_bypass`], which logs a warning); never migrates.
    ///
    /// # Errors
    /// `Invalid` for a malformed URL, unreadable TLS root certificates, or a
    /// role that bypasses row-level security without
    /// [`PgConfig::allow_rls_bypass`] (naming the role, why, and the
    /// setting); `Unavailable` when the server cannot be reached, the TLS
    /// handshake fails or the server refuses the login, with the reason.
    pub async fn open(config: PgConfig) -> Result<Self, StoreError> {
        let (driver, tls) = config.driver_config()?;
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match tls.client_config()? {
            None => Manager::from_config(driver, NoTls, recycling),
            Some(rustls) => Manager::from_config(driver, MakeRustlsConnect::new(rustls), recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::backend(DriverError::new("build connection pool", e.to_string())))?;
        let statement_timeout =
            config.statement_timeout.filter(|t| !t.is_zero()).map(|t| Arc::from(t.as_millis().max(1).to_string()));
        let backend = Self { pool, description: describe_url(&config.url), statement_timeout };
        backend.check().await?;
        if let Some(bypass) = backend.rls_bypass().await? {
            if !config.allow_rls_bypass {
                return Err(StoreError::Invalid(memlayer_domain::DomainError::new(
                    "database.allow_rls_bypass",
                    format!(
                        "memlayer refuses to use {}: {bypass}. Connect as a role created NOSUPERUSER NOBYPASSRLS \
                         (scripts/postgres creates `memlayer` so), or set database.allow_rls_bypass = true \
                         to accept it",
                        backend.description
                    ),
                )));
            }
            tracing::warn!(database = %backend.description, "{bypass} (allowed by database.allow_rls_bypass)");
        }
        Ok(backend)
    }

    /// [`PgBackend::open`], then applies every pending migration.
    ///
    /// # Errors
    /// As [`PgBackend::open`], and any migration failure.
    pub async fn open_migrated(config: PgConfig) -> Result<Self, StoreError> {
        let backend = Self::open(config).await?;
        memlayer_adapters_sql::migrate::migrate_up(&backend).await?;
        Ok(backend)
    }

    /// `postgres://user@host:port/db`, without the password.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// A round trip on a pooled connection, with a message naming the server.
    pub(crate) async fn check(&self) -> Result<(), StoreError> {
        let unreachable = |e: StoreError| {
            StoreError::Unavailable(format!(
                "cannot use the Postgres database {}: {}",
                self.description,
                match e {
                    StoreError::Unavailable(m) => m,
                    other => other.to_string(),
                }
            ))
        };
        let client = self.client().await.map_err(unreachable)?;
        client.simple_query("SELECT 1").await.ctx("ping").map_err(unreachable)?;
        Ok(())
    }

    /// Why the connecting role escapes row-level security, if it does.
    async fn rls_bypass(&self) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .ctx("read the connecting role")?;
        let (role, superuser, bypass): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
        let why = match (superuser, bypass) {
            (true, _) => "is a superuser",
            (false, true) => "has BYPASSRLS",
            (false, false) => return Ok(None),
        };
        Ok(Some(format!(
            "role `{role}` {why}, so Postgres does not apply row-level security to it and tenant isolation \
             rests on memlayer's own filters alone"
        )))
    }

    /// A pooled connection, carrying the statement timeout [`begin`] sets.
    pub(crate) async fn client(&self) -> Result<Conn, StoreError> {
        let client = self.pool.get().await.ctx("connect to Postgres")?;
        Ok(Conn { client, statement_timeout: self.statement_timeout.clone() })
    }
}

/// `Database` (expanded in `lib.rs` by `memlayer_adapters_sql::database!`)
/// on Postgres, besides the migrations.
#[async_trait]
impl DatabaseEngine for PgBackend {
    fn description(&self) -> &str {
        &self.description
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check().await
    }

    /// Warns when the connecting role is a superuser or has `BYPASSRLS`:
    /// Postgres then skips even forced row-level security, and tenant
    /// isolation rests on the adapter's own filters alone.
    async fn warnings(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .rls_bypass()
            .await?
            .map(|why| {
                format!(
                    "{why}; connect as a role created NOSUPERUSER NOBYPASSRLS (scripts/postgres creates `memlayer` so)"
                )
            })
            .into_iter()
            .collect())
    }

    /// `fsync`, `synchronous_commit` and `full_page_writes` as a pooled
    /// connection sees them.
    async fn durability(&self) -> Result<Vec<DurabilitySetting>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, setting FROM pg_settings \
                 WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes') ORDER BY name",
                &[],
            )
            .await
            .ctx("read durability settings")?;
        rows.iter()
            .map(|row| {
                let name = row.try_get(0).ctx("read durability settings")?;
                Ok(DurabilitySetting { name, value: row.try_get(1).ctx("read durability settings")? })
            })
            .collect()
    }
}

/// A pooled connection (it derefs to the driver's client) and the
/// `statement_timeout` every transaction [`begin`] opens on it gets.
pub(crate) struct Conn {
    client: Object,
    statement_timeout: Option<Arc<str>>,
}

impl std::ops::Deref for Conn {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.client
    }
}

const BIND_TENANT: &str = "SELECT set_config('memlayer.tenant', $1, true), set_config('memlayer.resource', $2, true)";
const BIND_TENANT_AND_TIMEOUT: &str = "SELECT set_config('memlayer.tenant', $1, true), \
     set_config('memlayer.resource', $2, true), set_config('statement_timeout', $3, true)";

/// Starts a transaction on `conn`, bound to `access` and bounded by the
/// backend's statement timeout (see [`begin_with`]).
pub(crate) async fn begin<'a>(conn: &'a mut Conn, access: Access<'_>) -> Result<Transaction<'a>, StoreError> {
    let Conn { client, statement_timeout } = conn;
    begin_with(client, access, statement_timeout.as_deref()).await
}

/// Starts a transaction on `client`, binds it to `access` (tenant and
/// resource) and, with `timeout` (milliseconds), bounds each of its
/// statements, in one round trip: the settings are transaction-local
/// (`set_config(…, true)`, as `SET LOCAL`), so they end with the
/// transaction and never leak to the connection's next user. Migrations and the vector index's schema set-up
/// pass no timeout: a schema change on a large table may rightly take long.
pub(crate) async fn begin_with<'a>(
    client: &'a mut Object,
    access: Access<'_>,
    timeout: Option<&str>,
) -> Result<Transaction<'a>, StoreError> {
    let tx = client.transaction().await.ctx("begin transaction")?;
    match timeout {
        Some(ms) => {
            let bind = tx.prepare_cached(BIND_TENANT_AND_TIMEOUT).await.ctx("bind transaction to tenant")?;
            tx.execute(&bind, &[&access.tenant(), &access.resource(), &ms]).await.ctx("bind transaction to tenant")?;
        }
        None => {
            let bind = tx.prepare_cached(BIND_TENANT).await.ctx("bind transaction to tenant")?;
            tx.execute(&bind, &[&access.tenant(), &access.resource()]).await.ctx("bind transaction to tenant")?;
        }
    }
    Ok(tx)
}
