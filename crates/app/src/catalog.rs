//! The catalog use cases: models, agents, tools and settings, with an
//! in-process read cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use memlayer_domain::{
    AgentConfig, AgentId, AgentName, CatalogEntity, ListCursor, ListQuery, ModelConfig, ModelId, NewAgent, NewModel,
    NewTool, Page, PageSize, Setting, SettingName, TenantId, ToolConfig, ToolId, validate_setting_value,
};
use memlayer_ports::{CatalogStore, StoreError};
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use serde_json::Value;

/// Size and lifetime of the catalog read cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Most entries per cache (models, agents by id, agents by name, settings).
    pub max_entries: u64,
    /// How long an entry is served before it is read again. Writes through
    /// this process invalidate at once; this bounds how long a write by
    /// another process can go unseen.
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { max_entries: 10_000, ttl: Duration::from_secs(60) }
    }
}

type SettingKey = (TenantId, SettingName, SettingName);

/// Models, agents, tools and settings over a [`CatalogStore`].
///
/// Reads of single models, agents (by id and by name) and settings are
/// served from bounded LRU caches with a time to live; every write through
/// this service invalidates what it may have changed before returning
/// (all models on a model write, since the default flag moves between
/// them; all agents on an agent write; the one setting on a setting write).
/// Listings and tools always read the store.
///
/// A read that raced a write never leaves the pre-write value cached: reads
/// note a write generation before going to the store and cache their
/// result only if no write finished meanwhile (writes bump the generation,
/// then invalidate).
///
/// Cloning it is one reference count: a clone is taken per request (the
/// HTTP state, the context service), and cloning the four caches one by one
/// cost ~4% of the server's CPU under load (docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct CatalogService(Arc<Catalog>);

/// What a [`CatalogService`] shares among its clones.
#[derive(Clone)]
struct Catalog {
    store: Arc<dyn CatalogStore>,
    writes: Arc<AtomicU64>,
    models: Cache<(TenantId, ModelId), ModelConfig>,
    agents: Cache<(TenantId, AgentId), AgentConfig>,
    agents_by_name: Cache<(TenantId, AgentName), Option<AgentConfig>>,
    settings: Cache<SettingKey, Option<Setting>>,
    coordinator: Option<crate::Coordinator>,
}

impl std::fmt::Debug for CatalogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogService")
            .field("store", &self.0.store)
            .field("cached_models", &self.0.models.entry_count())
            .field("cached_agents", &self.0.agents.entry_count())
            .field("cached_settings", &self.0.settings.entry_count())
            .finish()
    }
}

fn cache<K, V>(settings: CacheSettings) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(settings.max_entries)
        .time_to_live(settings.ttl)
        .eviction_policy(EvictionPolicy::lru())
        .build()
}

impl CatalogService {
    /// A service over `store` with caches of `cache` size and lifetime.
    #[must_use]
    pub fn new(store: Arc<dyn CatalogStore>, cache_settings: CacheSettings) -> Self {
        Self(Arc::new(Catalog {
            store,
            writes: Arc::new(AtomicU64::new(0)),
            models: cache(cache_settings),
            agents: cache(cache_settings),
            agents_by_name: cache(cache_settings),
            settings: cache(cache_settings),
            coordinator: None,
        }))
    }

    fn generation(&self) -> u64 {
        self.0.writes.load(Ordering::Acquire)
    }

    /// Whether no write finished since `generation` was read.
    fn unchanged_since(&self, generation: u64) -> bool {
        self.0.writes.load(Ordering::Acquire) == generation
    }

    fn wrote(&self) {
        self.0.writes.fetch_add(1, Ordering::AcqRel);
    }

    async fn models_changed(&self, tenant: &TenantId) {
        self.wrote();
        self.0.models.invalidate_all();
        self.announce(tenant).await;
    }

    async fn agents_changed(&self, tenant: &TenantId) {
        self.wrote();
        self.0.agents.invalidate_all();
        self.0.agents_by_name.invalidate_all();
        self.announce(tenant).await;
    }

    /// Tells the other servers (through Redis, when configured) that
    /// `tenant`'s catalog changed.
    async fn announce(&self, tenant: &TenantId) {
        if let Some(c) = &self.0.coordinator {
            c.publish_invalidation(tenant.as_str()).await;
        }
    }

    /// Forgets every cached read: another server changed the catalog (or
    /// may have, while the link to it was down).
    pub fn invalidate_from_peer(&self) {
        self.wrote();
        self.0.models.invalidate_all();
        self.0.agents.invalidate_all();
        self.0.agents_by_name.invalidate_all();
        self.0.settings.invalidate_all();
    }

    /// Announces this service's writes to other servers through
    /// `coordinator`, so their caches drop what changed at once.
    #[must_use]
    pub fn with_coordinator(self, coordinator: Option<crate::Coordinator>) -> Self {
        // Shares the store, the caches and the write count with `self`.
        Self(Arc::new(Catalog { coordinator, ..Catalog::clone(&self.0) }))
    }

    /// Creates a model; with `is_default` it becomes the tenant's only default.
    ///
    /// # Errors
    /// As [`CatalogStore::create_model`].
    pub async fn create_model(&self, tenant: &TenantId, new: NewModel) -> Result<ModelConfig, StoreError> {
        new.validate()?;
        let created = self.0.store.create_model(tenant, new).await;
        self.models_changed(tenant).await;
        created
    }

    /// One model (cached).
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such model.
    pub async fn get_model(&self, tenant: &TenantId, id: ModelId) -> Result<ModelConfig, StoreError> {
        let key = (tenant.clone(), id);
        if let Some(hit) = self.0.models.get(&key).await {
            return Ok(hit);
        }
        let generation = self.generation();
        let model = self.0.store.get_model(tenant, id).await?;
        if self.unchanged_since(generation) {
            self.0.models.insert(key, model.clone()).await;
        }
        Ok(model)
    }

    /// The tenant's default model, if one is marked.
    ///
    /// # Errors
    /// As [`CatalogStore::list_models`].
    pub async fn default_model(&self, tenant: &TenantId) -> Result<Option<ModelConfig>, StoreError> {
        let query = ListQuery::new(CatalogEntity::Models).filter("is_default", "eq", "true")?.limit(PageSize::new(1)?);
        Ok(self.0.store.list_models(tenant, &query).await?.items.pop())
    }

    /// A page of models.
    ///
    /// # Errors
    /// `Invalid` for a query of another entity.
    pub async fn list_models(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ModelConfig, ListCursor>, StoreError> {
        self.0.store.list_models(tenant, query).await
    }

    /// Replaces a model.
    ///
    /// # Errors
    /// As [`CatalogStore::update_model`].
    pub async fn update_model(&self, tenant: &TenantId, id: ModelId, new: NewModel) -> Result<ModelConfig, StoreError> {
        new.validate()?;
        let updated = self.0.store.update_model(tenant, id, new).await;
        self.models_changed(tenant).await;
        updated
    }

    /// Deletes a model no agent uses.
    ///
    /// # Errors
    /// As [`CatalogStore::delete_model`].
    pub async fn delete_model(&self, tenant: &TenantId, id: ModelId) -> Result<(), StoreError> {
        let deleted = self.0.store.delete_model(tenant, id).await;
        self.models_changed(tenant).await;
        deleted
    }

    /// Creates an agent.
    ///
    /// # Errors
    /// As [`CatalogStore::create_agent`] (`Invalid` for an unknown model or
    /// tool), and `Invalid` for a working-memory schema that does not compile.
    pub async fn create_agent(&self, tenant: &TenantId, new: NewAgent) -> Result<AgentConfig, StoreError> {
        new.validate()?;
        crate::working::check_agent_schema(&new.memory)?;
        let created = self.0.store.create_agent(tenant, new).await;
        self.agents_changed(tenant).await;
        created
    }

    /// One agent (cached).
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such agent.
    pub async fn get_agent(&self, tenant: &TenantId, id: AgentId) -> Result<AgentConfig, StoreError> {
        let key = (tenant.clone(), id);
        if let Some(hit) = self.0.agents.get(&key).await {
            return Ok(hit);
        }
        let generation = self.generation();
        let agent = self.0.store.get_agent(tenant, id).await?;
        if self.unchanged_since(generation) {
            self.0.agents.insert(key, agent.clone()).await;
        }
        Ok(agent)
    }

    /// The catalog agent named `name` (as threads name agents), or `None`
    /// (cached, absence included).
    ///
    /// # Errors
    /// As [`CatalogStore::list_agents`].
    pub async fn agent_by_name(&self, tenant: &TenantId, name: &AgentName) -> Result<Option<AgentConfig>, StoreError> {
        let key = (tenant.clone(), name.clone());
        if let Some(hit) = self.0.agents_by_name.get(&key).await {
            return Ok(hit);
        }
        let query = ListQuery::new(CatalogEntity::Agents).filter("name", "eq", name.as_str())?.limit(PageSize::new(1)?);
        let generation = self.generation();
        let found = self.0.store.list_agents(tenant, &query).await?.items.pop();
        if self.unchanged_since(generation) {
            self.0.agents_by_name.insert(key, found.clone()).await;
        }
        Ok(found)
    }

    /// A page of agents.
    ///
    /// # Errors
    /// `Invalid` for a query of another entity.
    pub async fn list_agents(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<AgentConfig, ListCursor>, StoreError> {
        self.0.store.list_agents(tenant, query).await
    }

    /// Replaces an agent.
    ///
    /// # Errors
    /// As [`CatalogStore::update_agent`].
    pub async fn update_agent(&self, tenant: &TenantId, id: AgentId, new: NewAgent) -> Result<AgentConfig, StoreError> {
        new.validate()?;
        crate::working::check_agent_schema(&new.memory)?;
        let updated = self.0.store.update_agent(tenant, id, new).await;
        self.agents_changed(tenant).await;
        updated
    }

    /// Deletes an agent.
    ///
    /// # Errors
    /// As [`CatalogStore::delete_agent`].
    pub async fn delete_agent(&self, tenant: &TenantId, id: AgentId) -> Result<(), StoreError> {
        let deleted = self.0.store.delete_agent(tenant, id).await;
        self.agents_changed(tenant).await;
        deleted
    }

    /// The agent's tools, whole, in its order.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such agent.
    pub async fn agent_tools(&self, tenant: &TenantId, id: AgentId) -> Result<Vec<ToolConfig>, StoreError> {
        self.0.store.agent_tools(tenant, id).await
    }

    /// Creates a tool.
    ///
    /// # Errors
    /// As [`CatalogStore::create_tool`].
    pub async fn create_tool(&self, tenant: &TenantId, new: NewTool) -> Result<ToolConfig, StoreError> {
        new.validate()?;
        self.0.store.create_tool(tenant, new).await
    }

    /// One tool.
    ///
    /// # Errors
    /// `NotFound` when the tenant has no such tool.
    pub async fn get_tool(&self, tenant: &TenantId, id: ToolId) -> Result<ToolConfig, StoreError> {
        self.0.store.get_tool(tenant, id).await
    }

    /// A page of tools.
    ///
    /// # Errors
    /// `Invalid` for a query of another entity.
    pub async fn list_tools(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ToolConfig, ListCursor>, StoreError> {
        self.0.store.list_tools(tenant, query).await
    }

    /// Replaces a tool.
    ///
    /// # Errors
    /// As [`CatalogStore::update_tool`].
    pub async fn update_tool(&self, tenant: &TenantId, id: ToolId, new: NewTool) -> Result<ToolConfig, StoreError> {
        new.validate()?;
        self.0.store.update_tool(tenant, id, new).await
    }

    /// Deletes a tool no agent lists.
    ///
    /// # Errors
    /// As [`CatalogStore::delete_tool`].
    pub async fn delete_tool(&self, tenant: &TenantId, id: ToolId) -> Result<(), StoreError> {
        self.0.store.delete_tool(tenant, id).await
    }

    /// A setting, or `None` when absent (cached, absence included).
    ///
    /// # Errors
    /// As [`CatalogStore::get_setting`].
    pub async fn get_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<Option<Setting>, StoreError> {
        let k = (tenant.clone(), category.clone(), key.clone());
        if let Some(hit) = self.0.settings.get(&k).await {
            return Ok(hit);
        }
        let generation = self.generation();
        let found = self.0.store.get_setting(tenant, category, key).await?;
        if self.unchanged_since(generation) {
            self.0.settings.insert(k, found.clone()).await;
        }
        Ok(found)
    }

    /// A setting's value, or `default` when it is absent.
    ///
    /// # Errors
    /// As [`CatalogStore::get_setting`].
    pub async fn setting_or(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
        default: Value,
    ) -> Result<Value, StoreError> {
        Ok(self.get_setting(tenant, category, key).await?.map_or(default, |s| s.value))
    }

    /// Creates or replaces a setting.
    ///
    /// A setting of category [`crate::LIMITS_CATEGORY`] must name a budget
    /// and hold a valid rate.
    ///
    /// # Errors
    /// As [`CatalogStore::put_setting`].
    pub async fn put_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
        value: Value,
    ) -> Result<Setting, StoreError> {
        validate_setting_value(&value)?;
        if category.as_str() == crate::LIMITS_CATEGORY {
            crate::validate_limits_setting(key.as_str(), &value)?;
        }
        let stored = self.0.store.put_setting(tenant, category, key, value).await;
        self.wrote();
        self.0.settings.invalidate(&(tenant.clone(), category.clone(), key.clone())).await;
        self.announce(tenant).await;
        stored
    }

    /// Deletes a setting.
    ///
    /// # Errors
    /// As [`CatalogStore::delete_setting`].
    pub async fn delete_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<(), StoreError> {
        let deleted = self.0.store.delete_setting(tenant, category, key).await;
        self.wrote();
        self.0.settings.invalidate(&(tenant.clone(), category.clone(), key.clone())).await;
        self.announce(tenant).await;
        deleted
    }
}
