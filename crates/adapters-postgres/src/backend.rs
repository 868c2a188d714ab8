//! The connection pool and the per-transaction tenant setting.

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction};
use memlayer_domain::TenantId;
use memlayer_ports::{DurabilitySetting, StoreError};
use tokio_postgres::NoTls;

use crate::config::{PgConfig, describe_url};
use crate::error::{Context as _, DriverError};

/// Whose rows a transaction may see. Row-level security policies compare
/// every row's `tenant` with the transaction's `memlayer.tenant` setting;
/// [`Access::All`] (`*`, which no tenant id can contain) is for the
/// background work that spans tenants (embedding jobs, index maintenance,
/// migrations).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access<'a> {
    /// One tenant's rows.
    Tenant(&'a TenantId),
    /// Every tenant's rows.
    All,
}

impl Access<'_> {
    fn setting(&self) -> &str {
        match self {
            Access::Tenant(t) => t.as_str(),
            Access::All => ALL_TENANTS,
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
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend").field("database", &self.description).finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Builds the pool and checks that the server answers; never migrates.
    ///
    /// # Errors
    /// `Invalid` for a malformed URL; `Unavailable` when the server cannot be
    /// reached or refuses the login, with the server's reason.
    pub async fn open(config: PgConfig) -> Result<Self, StoreError> {
        let driver = config.driver_config()?;
        let manager = Manager::from_config(driver, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::backend(DriverError::new("build connection pool", e.to_string())))?;
        let backend = Self { pool, description: describe_url(&config.url) };
        backend.check().await?;
        Ok(backend)
    }

    /// [`PgBackend::open`], then applies every pending migration.
    ///
    /// # Errors
    /// As [`PgBackend::open`], and any migration failure.
    pub async fn open_migrated(config: PgConfig) -> Result<Self, StoreError> {
        let backend = Self::open(config).await?;
        crate::migrations::migrate_up(&backend).await?;
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

    /// See `Database::warnings`.
    pub(crate) async fn role_warnings(&self) -> Result<Vec<String>, StoreError> {
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
            (false, false) => return Ok(Vec::new()),
        };
        Ok(vec![format!(
            "role `{role}` {why}, so Postgres does not apply row-level security to it and tenant isolation \
             rests on memlayer's own filters alone; connect as a role created NOSUPERUSER NOBYPASSRLS \
             (scripts/postgres creates `memlayer` so)"
        )])
    }

    /// See `Database::durability`: `fsync`, `synchronous_commit` and
    /// `full_page_writes` as a pooled connection sees them.
    pub(crate) async fn durability(&self) -> Result<Vec<DurabilitySetting>, StoreError> {
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

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.ctx("connect to Postgres")
    }
}

const SCOPE: &str = "SELECT set_config('memlayer.tenant', $1, true)";

/// Starts a transaction on `client` and scopes it to `access`: the setting is
/// transaction-local (`set_config(…, true)`), so it ends with the
/// transaction and never leaks to the connection's next user.
pub(crate) async fn begin<'a>(client: &'a mut Object, access: Access<'_>) -> Result<Transaction<'a>, StoreError> {
    let tx = client.transaction().await.ctx("begin transaction")?;
    let scope = tx.prepare_cached(SCOPE).await.ctx("scope transaction to tenant")?;
    tx.execute(&scope, &[&access.setting()]).await.ctx("scope transaction to tenant")?;
    Ok(tx)
}
