//! [`CatalogStore`]: the catalog (models, agents, tools,
//! settings) with typed, filtered listings.

use async_trait::async_trait;
use memlayer_domain::{
    AgentConfig, AgentId, ListCursor, ListQuery, ModelConfig, ModelId, NewAgent, NewModel, NewTool, Page, Setting,
    SettingName, TenantId, ToolConfig, ToolId,
};

use crate::StoreError;

/// The catalog: models, agents, tools and settings, per tenant.
///
/// Common contract of every method:
/// - MUST scope every read and write by `tenant`: another tenant's record is
///   `NotFound`, and never appears in a listing;
/// - MUST validate its input as the domain's `validate` methods do and
///   return `Invalid` (storing nothing) when it fails;
/// - a failed call MUST change nothing.
///
/// Listings (`list_*`) MUST return the records matching every filter of
/// `query`, ordered by the query's sort field then by id (both ascending, or
/// both descending), at most `query.page_size()` of them, starting strictly
/// after `query.after()`; MUST return a `next_cursor` (built with
/// [`ListQuery::cursor_after`] from the page's last record) exactly when more
/// records match; MUST never skip or repeat a record across pages, including
/// across ties on the sort field. Text compares bytewise; `contains` on text
/// is a case-sensitive substring test, on a list a membership test.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Creates a model with a new time-ordered id.
    ///
    /// MUST return the stored model whole; MUST return `Conflict` when the
    /// tenant already has a model of that name; when `is_default` is set,
    /// MUST clear the flag on the tenant's previous default in the same
    /// transaction, so that at most one model per tenant is the default.
    async fn create_model(&self, tenant: &TenantId, new: NewModel) -> Result<ModelConfig, StoreError>;

    /// MUST return `NotFound` when the model does not exist for the tenant.
    async fn get_model(&self, tenant: &TenantId, id: ModelId) -> Result<ModelConfig, StoreError>;

    /// Lists models; see the listing contract above.
    async fn list_models(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ModelConfig, ListCursor>, StoreError>;

    /// Replaces a model's fields and bumps `updated_at`, keeping `created_at`.
    ///
    /// MUST return `NotFound` as [`CatalogStore::get_model`], `Conflict` as
    /// [`CatalogStore::create_model`], and move the default flag as it does.
    async fn update_model(&self, tenant: &TenantId, id: ModelId, new: NewModel) -> Result<ModelConfig, StoreError>;

    /// MUST return `NotFound` as [`CatalogStore::get_model`]; MUST return
    /// `Conflict` when an agent of the tenant uses the model.
    async fn delete_model(&self, tenant: &TenantId, id: ModelId) -> Result<(), StoreError>;

    /// Creates an agent with a new time-ordered id.
    ///
    /// MUST return the stored agent whole, tools in the given order; MUST
    /// return `Invalid` (on `model_id` or `tool_ids`) when the model or a tool
    /// does not exist for the tenant; MUST return `Conflict` when the tenant
    /// already has an agent of that name.
    async fn create_agent(&self, tenant: &TenantId, new: NewAgent) -> Result<AgentConfig, StoreError>;

    /// MUST return `NotFound` when the agent does not exist for the tenant.
    async fn get_agent(&self, tenant: &TenantId, id: AgentId) -> Result<AgentConfig, StoreError>;

    /// Lists agents; see the listing contract above.
    async fn list_agents(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<AgentConfig, ListCursor>, StoreError>;

    /// Replaces an agent's fields and bumps `updated_at`.
    ///
    /// MUST return `NotFound` as [`CatalogStore::get_agent`], and `Invalid` and
    /// `Conflict` as [`CatalogStore::create_agent`].
    async fn update_agent(&self, tenant: &TenantId, id: AgentId, new: NewAgent) -> Result<AgentConfig, StoreError>;

    /// MUST return `NotFound` as [`CatalogStore::get_agent`].
    async fn delete_agent(&self, tenant: &TenantId, id: AgentId) -> Result<(), StoreError>;

    /// The agent's tools, whole, in the agent's order.
    ///
    /// MUST return `NotFound` as [`CatalogStore::get_agent`].
    async fn agent_tools(&self, tenant: &TenantId, id: AgentId) -> Result<Vec<ToolConfig>, StoreError>;

    /// Creates a tool with a new time-ordered id.
    ///
    /// MUST return the stored tool whole; MUST return `Conflict` when the
    /// tenant already has a tool of that name.
    async fn create_tool(&self, tenant: &TenantId, new: NewTool) -> Result<ToolConfig, StoreError>;

    /// MUST return `NotFound` when the tool does not exist for the tenant.
    async fn get_tool(&self, tenant: &TenantId, id: ToolId) -> Result<ToolConfig, StoreError>;

    /// Lists tools; see the listing contract above.
    async fn list_tools(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ToolConfig, ListCursor>, StoreError>;

    /// Replaces a tool's fields and bumps `updated_at`.
    ///
    /// MUST return `NotFound` as [`CatalogStore::get_tool`] and `Conflict` as
    /// [`CatalogStore::create_tool`].
    async fn update_tool(&self, tenant: &TenantId, id: ToolId, new: NewTool) -> Result<ToolConfig, StoreError>;

    /// MUST return `NotFound` as [`CatalogStore::get_tool`]; MUST return
    /// `Conflict` when an agent of the tenant lists the tool.
    async fn delete_tool(&self, tenant: &TenantId, id: ToolId) -> Result<(), StoreError>;

    /// A setting, or `None` when it was never set (or was deleted).
    async fn get_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<Option<Setting>, StoreError>;

    /// Creates or replaces a setting.
    ///
    /// MUST return the stored setting; MUST return `Invalid` for a value
    /// larger than the domain allows.
    async fn put_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
        value: serde_json::Value,
    ) -> Result<Setting, StoreError>;

    /// MUST return `NotFound` when the setting does not exist for the tenant.
    async fn delete_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<(), StoreError>;
}
