//! The catalog (models, tools, agents, settings), written once
//! for both backends: its SQL derives from the [`crate::table`]
//! descriptions, and its rules live here, not in the adapters: names unique
//! per tenant, one default model (setting one clears the others), an
//! agent's model and tools must exist, a model or tool in use cannot be
//! deleted, `validate()` before anything is stored. Every check and the
//! write it guards run in one [`Transactor::write_serial`] transaction, in which a
//! tenant's writes are serial.
//!
//! Listings are built from fixed SQL fragments: a declared field maps to
//! its described column, operators to fixed SQL operators, and every value
//! is a bound parameter. Nothing a caller wrote becomes SQL text.
//!
//! An adapter implements [`Transactor`] and expands [`catalog_store!`](crate::catalog_store) for
//! its backend type.

use memlayer_domain::{
    AgentConfig, AgentId, AgentName, CatalogEntity, CatalogRecord, DomainError, FieldKind, FieldValue, ListCursor,
    ListQuery, MemoryOptions, ModelConfig, ModelId, NewAgent, NewModel, NewTool, Op, Page, Setting, SettingName,
    TenantId, ToolConfig, ToolId, WorkingMemoryOptions, now, validate_setting_value,
};
use memlayer_ports::StoreError;
use uuid::Uuid;

use crate::exec::{Executor, Row, Transactor, Work};
use crate::table::{AGENTS, MODELS, TOOLS, Table};
use crate::{Cells, Dialect, Sql, SqlOp as _, SqlValue, corrupt};

pub(crate) fn work<T, F>(f: F) -> Work<T>
where
    F: for<'e> FnOnce(&'e dyn Executor) -> crate::exec::WorkFuture<'e, T> + Send + 'static,
{
    Box::new(f)
}

fn field_value(v: &FieldValue) -> SqlValue {
    match v {
        FieldValue::Text(s) => SqlValue::Text(s.clone()),
        FieldValue::Integer(i) => SqlValue::Int(*i),
        FieldValue::Float(f) => SqlValue::Real(*f),
        FieldValue::Bool(b) => SqlValue::Bool(*b),
        FieldValue::Timestamp(t) => SqlValue::Timestamp(*t),
        FieldValue::Id(u) => SqlValue::Uuid(*u),
    }
}

fn table_of(entity: CatalogEntity) -> &'static Table {
    match entity {
        CatalogEntity::Models => &MODELS,
        CatalogEntity::Agents => &AGENTS,
        CatalogEntity::Tools => &TOOLS,
    }
}

/// The SQL expression of a declared field: its column, bytewise when text.
fn expr(dialect: Dialect, table: &Table, spec: &memlayer_domain::FieldSpec) -> Result<String, StoreError> {
    let col = table.column(spec)?.name;
    Ok(if spec.kind == FieldKind::Text { dialect.bytewise(col) } else { col.to_owned() })
}

/// The listing query for `query`: `SELECT … WHERE tenant = ? AND …
/// ORDER BY col, id LIMIT page + 1`.
pub fn list_sql(dialect: Dialect, tenant: &TenantId, query: &ListQuery) -> Result<Sql, StoreError> {
    let table = table_of(query.entity());
    let mut sql = Sql::new(dialect).dynamic();
    table.select(&mut sql, tenant.as_str());
    for f in query.filters() {
        let spec = f.field();
        if let Some((_, exists)) = table.link.filter(|(name, _)| *name == spec.name) {
            // `tool_ids contains X`: X names a tool by its UUID; text that is
            // not a UUID matches nothing (bound as NULL, equal to no id).
            let v = match f.values() {
                [FieldValue::Text(s)] => s.parse::<Uuid>().ok(),
                _ => return Err(table.unknown(spec.name)),
            };
            let p = sql.arg(v);
            sql.push(" AND ").push(&exists.replace("{}", &p));
            continue;
        }
        let col = expr(dialect, table, spec)?;
        let values = f.values();
        sql.push(" AND ");
        match f.op() {
            Op::In => {
                sql.push(&col).push(" IN (").bind_list(values.iter().map(field_value)).push(")");
            }
            Op::Contains => {
                let p = sql.arg(field_value(&values[0]));
                sql.push(&dialect.contains(&col, &p));
            }
            op => {
                let sym = op.sql_comparison().ok_or_else(|| table.unknown(spec.name))?;
                sql.push(&col).push(" ").push(sym).push(" ").bind(field_value(&values[0]));
            }
        }
    }
    let sort = query.sort();
    let col = expr(dialect, table, sort.field())?;
    let (cmp, dir) = if sort.descending() { ("<", "DESC") } else { (">", "ASC") };
    if let Some(after) = query.after() {
        let v = sql.arg(field_value(&after.value));
        let id = sql.arg(after.id);
        sql.push(&format!(" AND ({col} {cmp} {v} OR ({col} = {v} AND id {cmp} {id}))"));
    }
    sql.push(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT "));
    sql.bind(i64::from(query.page_size().get()) + 1);
    Ok(sql)
}

pub(crate) fn model_values(m: &ModelConfig) -> Vec<SqlValue> {
    let s = &m.spec;
    vec![
        m.id.as_uuid().into(),
        s.name.as_str().into(),
        s.provider.as_str().into(),
        s.context_window.into(),
        s.max_output_tokens.into(),
        s.input_price.into(),
        s.output_price.into(),
        s.is_default.into(),
        m.created_at.into(),
        m.updated_at.into(),
    ]
}

pub(crate) fn model_row(row: &Row, tenant: &TenantId) -> Result<ModelConfig, StoreError> {
    let r = Cells::new(row, MODELS.name);
    Ok(ModelConfig {
        id: ModelId::from_uuid(r.uuid(0, "id")?),
        tenant: tenant.clone(),
        spec: NewModel {
            name: r.text(1, "name")?,
            provider: r.text(2, "provider")?,
            context_window: r.u32(3, "context_window")?,
            max_output_tokens: r.u32(4, "max_output_tokens")?,
            input_price: r.real(5, "input_price")?,
            output_price: r.real(6, "output_price")?,
            is_default: r.bool(7, "is_default")?,
        },
        created_at: r.timestamp(8, "created_at")?,
        updated_at: r.timestamp(9, "updated_at")?,
    })
}

pub(crate) fn tool_values(t: &ToolConfig) -> Vec<SqlValue> {
    let s = &t.spec;
    vec![
        t.id.as_uuid().into(),
        s.name.as_str().into(),
        s.description.as_str().into(),
        SqlValue::Json(s.parameters.clone()),
        t.created_at.into(),
        t.updated_at.into(),
    ]
}

pub(crate) fn tool_row(row: &Row, tenant: &TenantId) -> Result<ToolConfig, StoreError> {
    let r = Cells::new(row, TOOLS.name);
    Ok(ToolConfig {
        id: ToolId::from_uuid(r.uuid(0, "id")?),
        tenant: tenant.clone(),
        spec: NewTool {
            name: r.text(1, "name")?,
            description: r.text(2, "description")?,
            parameters: r.json(3, "parameters")?,
        },
        created_at: r.timestamp(4, "created_at")?,
        updated_at: r.timestamp(5, "updated_at")?,
    })
}

pub(crate) fn agent_values(a: &AgentConfig) -> Vec<SqlValue> {
    let (s, m) = (&a.spec, &a.spec.memory);
    vec![
        a.id.as_uuid().into(),
        s.name.as_str().into(),
        s.model_id.as_uuid().into(),
        s.system_prompt.as_str().into(),
        m.last_n.into(),
        m.top_k.into(),
        m.token_budget.into(),
        a.created_at.into(),
        a.updated_at.into(),
        m.working_memory.as_ref().map_or(SqlValue::Null, |w| SqlValue::Json(w.to_value())),
        m.context.as_ref().map_or(SqlValue::Null, |c| SqlValue::Json(c.to_value())),
        s.runner.as_ref().map_or(SqlValue::Null, |r| SqlValue::Json(serde_json::to_value(r).unwrap_or_default())),
    ]
}

/// An agent row without its tools (filled in by [`with_tools`]).
pub(crate) fn agent_row(row: &Row, tenant: &TenantId) -> Result<AgentConfig, StoreError> {
    let r = Cells::new(row, AGENTS.name);
    Ok(AgentConfig {
        id: AgentId::from_uuid(r.uuid(0, "id")?),
        tenant: tenant.clone(),
        spec: NewAgent {
            name: r.parse(1, "name", AgentName::parse)?,
            model_id: ModelId::from_uuid(r.uuid(2, "model_id")?),
            system_prompt: r.text(3, "system_prompt")?,
            tool_ids: Vec::new(),
            memory: MemoryOptions {
                last_n: r.opt_u32(4, "last_n")?,
                top_k: r.opt_u32(5, "top_k")?,
                token_budget: r.opt_u32(6, "token_budget")?,
                working_memory: r
                    .opt_json::<serde_json::Value>(9, "working_memory")?
                    .map(|v| WorkingMemoryOptions::from_value(&v))
                    .transpose()
                    .map_err(|e| corrupt(AGENTS.name, "working_memory", e))?,
                context: r
                    .opt_json::<serde_json::Value>(10, "context")?
                    .map(|v| memlayer_domain::ContextOptions::from_value(&v))
                    .transpose()
                    .map_err(|e| crate::corrupt(AGENTS.name, "context", e))?,
            },
            runner: r
                .opt_json::<serde_json::Value>(11, "runner")?
                .map(|v| memlayer_domain::RunnerSpec::from_value("runner", v))
                .transpose()
                .map_err(|e| crate::corrupt(AGENTS.name, "runner", e))?,
        },
        created_at: r.timestamp(7, "created_at")?,
        updated_at: r.timestamp(8, "updated_at")?,
    })
}

/// Fills in the agents' tools, in order, with one query.
pub(crate) async fn with_tools(
    ex: &dyn Executor,
    mut agents: Vec<AgentConfig>,
) -> Result<Vec<AgentConfig>, StoreError> {
    if agents.is_empty() {
        return Ok(agents);
    }
    let mut sql = Sql::new(ex.dialect()).dynamic();
    sql.push("SELECT agent_id, tool_id FROM config_agent_tools WHERE agent_id IN (")
        .bind_list(agents.iter().map(|a| a.id.as_uuid()))
        .push(") ORDER BY agent_id, position");
    for row in ex.fetch("read agent tools", sql).await? {
        let r = Cells::new(&row, "config_agent_tools");
        let (agent, tool) = (r.uuid(0, "agent_id")?, r.uuid(1, "tool_id")?);
        if let Some(a) = agents.iter_mut().find(|a| a.id.as_uuid() == agent) {
            a.spec.tool_ids.push(ToolId::from_uuid(tool));
        }
    }
    Ok(agents)
}

/// Replaces the agent's tool rows with `tools`, positions 0, 1, … in order.
pub(crate) async fn write_agent_tools(
    ex: &dyn Executor,
    tenant: &TenantId,
    id: AgentId,
    tools: &[ToolId],
) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    sql.push("DELETE FROM config_agent_tools WHERE agent_id = ").bind(id.as_uuid());
    ex.execute("write agent tools", sql).await?;
    if tools.is_empty() {
        return Ok(());
    }
    let with_tenant = ex.dialect().tenant_on_every_table();
    let mut sql = Sql::new(ex.dialect()).dynamic();
    sql.push(if with_tenant {
        "INSERT INTO config_agent_tools (tenant, agent_id, position, tool_id) VALUES "
    } else {
        "INSERT INTO config_agent_tools (agent_id, position, tool_id) VALUES "
    });
    for (i, t) in tools.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        if with_tenant {
            sql.bind(tenant.as_str()).push(", ");
        }
        let position = i64::try_from(i).unwrap_or(i64::MAX);
        sql.bind(id.as_uuid()).push(", ").bind(position).push(", ").bind(t.as_uuid()).push(")");
    }
    ex.execute("write agent tools", sql).await?;
    Ok(())
}

async fn exists(ex: &dyn Executor, context: &'static str, sql: Sql) -> Result<bool, StoreError> {
    Ok(ex.fetch_one(context, sql).await?.is_some())
}

/// `Conflict` when another row of the tenant in `table` has `name`.
pub(crate) async fn name_free(
    ex: &dyn Executor,
    table: &Table,
    tenant: &TenantId,
    name: &str,
    except: Option<Uuid>,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    table.name_taken(&mut sql, tenant.as_str(), name, except);
    if exists(ex, "check name", sql).await? {
        return Err(StoreError::Conflict(format!("a {} named `{name}` already exists", table.what)));
    }
    Ok(())
}

/// `NotFound` unless the row exists for the tenant.
async fn must_exist(ex: &dyn Executor, table: &Table, tenant: &TenantId, id: Uuid) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    table.exists(&mut sql, tenant.as_str(), id);
    if exists(ex, "look up", sql).await? { Ok(()) } else { Err(StoreError::not_found(table.what, id)) }
}

/// The row `id` of the tenant in `table`, decoded.
pub(crate) async fn get_on<T>(
    ex: &dyn Executor,
    table: &Table,
    tenant: &TenantId,
    id: Uuid,
    decode: fn(&Row, &TenantId) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut sql = Sql::new(ex.dialect());
    table.select_by_id(&mut sql, tenant.as_str(), id);
    let row = ex.fetch_one("get", sql).await?;
    row.as_ref().map(|r| decode(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found(table.what, id))
}

/// Writes `values` over row `id` and returns it, decoded.
async fn update_on<T>(
    ex: &dyn Executor,
    table: &Table,
    tenant: &TenantId,
    id: Uuid,
    values: Vec<SqlValue>,
    decode: fn(&Row, &TenantId) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut sql = Sql::new(ex.dialect());
    table.update(&mut sql, tenant.as_str(), id, values);
    let row = ex.fetch_one("update", sql).await?;
    row.as_ref().map(|r| decode(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found(table.what, id))
}

pub(crate) async fn insert_on(
    ex: &dyn Executor,
    table: &Table,
    tenant: &TenantId,
    values: Vec<SqlValue>,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    table.insert(&mut sql, tenant.as_str(), values);
    ex.execute("create", sql).await?;
    Ok(())
}

async fn delete_on(ex: &dyn Executor, table: &Table, tenant: &TenantId, id: Uuid) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    table.delete(&mut sql, tenant.as_str(), id);
    ex.execute("delete", sql).await?;
    Ok(())
}

/// Clears the tenant's default flag on every model but `keep`.
pub(crate) async fn clear_default(
    ex: &dyn Executor,
    tenant: &TenantId,
    keep: ModelId,
    at: memlayer_domain::Timestamp,
) -> Result<(), StoreError> {
    let d = ex.dialect();
    let mut sql = Sql::new(d);
    sql.push(&format!("UPDATE config_models SET is_default = {}, updated_at = ", d.bool_literal(false))).bind(at);
    sql.push(" WHERE tenant = ").bind(tenant.as_str());
    sql.push(&format!(" AND is_default = {} AND id <> ", d.bool_literal(true))).bind(keep.as_uuid());
    ex.execute("clear default model", sql).await?;
    Ok(())
}

/// Checks an agent's references inside the write transaction: `Invalid`
/// for a model or tool the tenant does not have.
pub(crate) async fn check_agent_refs(ex: &dyn Executor, tenant: &TenantId, new: &NewAgent) -> Result<(), StoreError> {
    let mut sql = Sql::new(ex.dialect());
    MODELS.exists(&mut sql, tenant.as_str(), new.model_id.as_uuid());
    if !exists(ex, "check agent model", sql).await? {
        return Err(DomainError::new("model_id", format!("model {} does not exist", new.model_id)).into());
    }
    for t in &new.tool_ids {
        let mut sql = Sql::new(ex.dialect());
        TOOLS.exists(&mut sql, tenant.as_str(), t.as_uuid());
        if !exists(ex, "check agent tools", sql).await? {
            return Err(DomainError::new("tool_ids", format!("tool {t} does not exist")).into());
        }
    }
    Ok(())
}

/// The name of an agent that uses the row (`sql` selects agent names).
async fn used_by(ex: &dyn Executor, context: &'static str, sql: Sql) -> Result<Option<String>, StoreError> {
    ex.fetch_one(context, sql).await?.map(|row| Cells::new(&row, AGENTS.name).text(0, "name")).transpose()
}

fn check_entity(query: &ListQuery, want: CatalogEntity) -> Result<(), StoreError> {
    if query.entity() == want {
        Ok(())
    } else {
        Err(DomainError::new("query", format!("lists {}, not {}", query.entity().as_str(), want.as_str())).into())
    }
}

/// Cuts a `limit + 1` read to a page and its cursor.
fn page<T: CatalogRecord>(
    tenant: &TenantId,
    query: &ListQuery,
    mut items: Vec<T>,
) -> Result<Page<T, ListCursor>, StoreError> {
    let limit = query.page_size().get() as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| query.cursor_after(tenant, last)).transpose()?
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

async fn list<B: Transactor, T: CatalogRecord + Send + 'static>(
    b: &B,
    tenant: &TenantId,
    query: &ListQuery,
    want: CatalogEntity,
    decode: fn(&Row, &TenantId) -> Result<T, StoreError>,
) -> Result<Page<T, ListCursor>, StoreError> {
    check_entity(query, want)?;
    let sql = list_sql(b.dialect(), tenant, query)?;
    let owner = tenant.clone();
    let items = b
        .read(
            tenant,
            work(move |ex| {
                Box::pin(async move {
                    let rows = ex.fetch("list catalog", sql).await?;
                    rows.iter().map(|r| decode(r, &owner)).collect::<Result<Vec<_>, _>>()
                })
            }),
        )
        .await?;
    page(tenant, query, items)
}

/// [`memlayer_ports::CatalogStore::create_model`].
pub async fn create_model<B: Transactor>(b: &B, tenant: &TenantId, new: NewModel) -> Result<ModelConfig, StoreError> {
    new.validate()?;
    let at = now();
    let created = ModelConfig { id: ModelId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
    let stored = created.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let t = &stored.tenant;
                name_free(ex, &MODELS, t, &stored.spec.name, None).await?;
                if stored.spec.is_default {
                    clear_default(ex, t, stored.id, at).await?;
                }
                insert_on(ex, &MODELS, t, model_values(&stored)).await
            })
        }),
    )
    .await?;
    Ok(created)
}

/// [`memlayer_ports::CatalogStore::get_model`].
pub async fn get_model<B: Transactor>(b: &B, tenant: &TenantId, id: ModelId) -> Result<ModelConfig, StoreError> {
    let t = tenant.clone();
    b.read(tenant, work(move |ex| Box::pin(async move { get_on(ex, &MODELS, &t, id.as_uuid(), model_row).await })))
        .await
}

/// [`memlayer_ports::CatalogStore::list_models`].
pub async fn list_models<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    query: &ListQuery,
) -> Result<Page<ModelConfig, ListCursor>, StoreError> {
    list(b, tenant, query, CatalogEntity::Models, model_row).await
}

/// [`memlayer_ports::CatalogStore::update_model`].
pub async fn update_model<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    id: ModelId,
    new: NewModel,
) -> Result<ModelConfig, StoreError> {
    new.validate()?;
    let at = now();
    let t = tenant.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &MODELS, &t, id.as_uuid()).await?;
                name_free(ex, &MODELS, &t, &new.name, Some(id.as_uuid())).await?;
                if new.is_default {
                    clear_default(ex, &t, id, at).await?;
                }
                let values =
                    model_values(&ModelConfig { id, tenant: t.clone(), spec: new, created_at: at, updated_at: at });
                update_on(ex, &MODELS, &t, id.as_uuid(), values, model_row).await
            })
        }),
    )
    .await
}

/// [`memlayer_ports::CatalogStore::delete_model`].
pub async fn delete_model<B: Transactor>(b: &B, tenant: &TenantId, id: ModelId) -> Result<(), StoreError> {
    let t = tenant.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &MODELS, &t, id.as_uuid()).await?;
                let mut sql = Sql::new(ex.dialect());
                sql.push("SELECT name FROM config_agents WHERE tenant = ").bind(t.as_str());
                sql.push(" AND model_id = ").bind(id.as_uuid()).push(" LIMIT 1");
                if let Some(agent) = used_by(ex, "delete model", sql).await? {
                    return Err(StoreError::Conflict(format!("model {id} is used by agent `{agent}`")));
                }
                delete_on(ex, &MODELS, &t, id.as_uuid()).await
            })
        }),
    )
    .await
}

async fn get_agent_on(ex: &dyn Executor, tenant: &TenantId, id: AgentId) -> Result<AgentConfig, StoreError> {
    let found = get_on(ex, &AGENTS, tenant, id.as_uuid(), agent_row).await?;
    Ok(with_tools(ex, vec![found]).await?.remove(0))
}

/// [`memlayer_ports::CatalogStore::create_agent`].
pub async fn create_agent<B: Transactor>(b: &B, tenant: &TenantId, new: NewAgent) -> Result<AgentConfig, StoreError> {
    new.validate()?;
    let at = now();
    let created = AgentConfig { id: AgentId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
    let stored = created.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                let (t, spec) = (&stored.tenant, &stored.spec);
                check_agent_refs(ex, t, spec).await?;
                name_free(ex, &AGENTS, t, spec.name.as_str(), None).await?;
                insert_on(ex, &AGENTS, t, agent_values(&stored)).await?;
                write_agent_tools(ex, t, stored.id, &spec.tool_ids).await
            })
        }),
    )
    .await?;
    Ok(created)
}

/// [`memlayer_ports::CatalogStore::get_agent`].
pub async fn get_agent<B: Transactor>(b: &B, tenant: &TenantId, id: AgentId) -> Result<AgentConfig, StoreError> {
    let t = tenant.clone();
    b.read(tenant, work(move |ex| Box::pin(async move { get_agent_on(ex, &t, id).await }))).await
}

/// [`memlayer_ports::CatalogStore::list_agents`].
pub async fn list_agents<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    query: &ListQuery,
) -> Result<Page<AgentConfig, ListCursor>, StoreError> {
    check_entity(query, CatalogEntity::Agents)?;
    let sql = list_sql(b.dialect(), tenant, query)?;
    let owner = tenant.clone();
    let items = b
        .read(
            tenant,
            work(move |ex| {
                Box::pin(async move {
                    let rows = ex.fetch("list agents", sql).await?;
                    let agents = rows.iter().map(|r| agent_row(r, &owner)).collect::<Result<Vec<_>, _>>()?;
                    with_tools(ex, agents).await
                })
            }),
        )
        .await?;
    page(tenant, query, items)
}

/// [`memlayer_ports::CatalogStore::update_agent`].
pub async fn update_agent<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    id: AgentId,
    new: NewAgent,
) -> Result<AgentConfig, StoreError> {
    new.validate()?;
    let at = now();
    let t = tenant.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &AGENTS, &t, id.as_uuid()).await?;
                check_agent_refs(ex, &t, &new).await?;
                name_free(ex, &AGENTS, &t, new.name.as_str(), Some(id.as_uuid())).await?;
                let tools = new.tool_ids.clone();
                let values =
                    agent_values(&AgentConfig { id, tenant: t.clone(), spec: new, created_at: at, updated_at: at });
                update_on(ex, &AGENTS, &t, id.as_uuid(), values, agent_row).await?;
                write_agent_tools(ex, &t, id, &tools).await?;
                get_agent_on(ex, &t, id).await
            })
        }),
    )
    .await
}

/// [`memlayer_ports::CatalogStore::delete_agent`].
pub async fn delete_agent<B: Transactor>(b: &B, tenant: &TenantId, id: AgentId) -> Result<(), StoreError> {
    let t = tenant.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &AGENTS, &t, id.as_uuid()).await?;
                let mut sql = Sql::new(ex.dialect());
                sql.push("DELETE FROM config_agent_tools WHERE agent_id = ").bind(id.as_uuid());
                ex.execute("delete agent", sql).await?;
                delete_on(ex, &AGENTS, &t, id.as_uuid()).await
            })
        }),
    )
    .await
}

/// [`memlayer_ports::CatalogStore::agent_tools`].
pub async fn agent_tools<B: Transactor>(b: &B, tenant: &TenantId, id: AgentId) -> Result<Vec<ToolConfig>, StoreError> {
    let t = tenant.clone();
    b.read(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &AGENTS, &t, id.as_uuid()).await?;
                let mut sql = Sql::new(ex.dialect());
                sql.push(&format!(
                    "SELECT {} FROM config_agent_tools a JOIN config_tools t ON t.id = a.tool_id WHERE a.agent_id = ",
                    TOOLS.column_list(Some("t"))
                ));
                sql.bind(id.as_uuid()).push(" AND t.tenant = ").bind(t.as_str()).push(" ORDER BY a.position");
                let rows = ex.fetch("agent tools", sql).await?;
                rows.iter().map(|r| tool_row(r, &t)).collect()
            })
        }),
    )
    .await
}

/// [`memlayer_ports::CatalogStore::create_tool`].
pub async fn create_tool<B: Transactor>(b: &B, tenant: &TenantId, new: NewTool) -> Result<ToolConfig, StoreError> {
    new.validate()?;
    let at = now();
    let created = ToolConfig { id: ToolId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
    let stored = created.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                name_free(ex, &TOOLS, &stored.tenant, &stored.spec.name, None).await?;
                insert_on(ex, &TOOLS, &stored.tenant, tool_values(&stored)).await
            })
        }),
    )
    .await?;
    Ok(created)
}

/// [`memlayer_ports::CatalogStore::get_tool`].
pub async fn get_tool<B: Transactor>(b: &B, tenant: &TenantId, id: ToolId) -> Result<ToolConfig, StoreError> {
    let t = tenant.clone();
    b.read(tenant, work(move |ex| Box::pin(async move { get_on(ex, &TOOLS, &t, id.as_uuid(), tool_row).await }))).await
}

/// [`memlayer_ports::CatalogStore::list_tools`].
pub async fn list_tools<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    query: &ListQuery,
) -> Result<Page<ToolConfig, ListCursor>, StoreError> {
    list(b, tenant, query, CatalogEntity::Tools, tool_row).await
}

/// [`memlayer_ports::CatalogStore::update_tool`].
pub async fn update_tool<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    id: ToolId,
    new: NewTool,
) -> Result<ToolConfig, StoreError> {
    new.validate()?;
    let at = now();
    let t = tenant.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &TOOLS, &t, id.as_uuid()).await?;
                name_free(ex, &TOOLS, &t, &new.name, Some(id.as_uuid())).await?;
                let values =
                    tool_values(&ToolConfig { id, tenant: t.clone(), spec: new, created_at: at, updated_at: at });
                update_on(ex, &TOOLS, &t, id.as_uuid(), values, tool_row).await
            })
        }),
    )
    .await
}

/// [`memlayer_ports::CatalogStore::delete_tool`].
pub async fn delete_tool<B: Transactor>(b: &B, tenant: &TenantId, id: ToolId) -> Result<(), StoreError> {
    let t = tenant.clone();
    b.write_serial(
        tenant,
        work(move |ex| {
            Box::pin(async move {
                must_exist(ex, &TOOLS, &t, id.as_uuid()).await?;
                let mut sql = Sql::new(ex.dialect());
                sql.push(
                    "SELECT g.name FROM config_agent_tools a JOIN config_agents g ON g.id = a.agent_id \
                     WHERE g.tenant = ",
                );
                sql.bind(t.as_str()).push(" AND a.tool_id = ").bind(id.as_uuid()).push(" LIMIT 1");
                if let Some(agent) = used_by(ex, "delete tool", sql).await? {
                    return Err(StoreError::Conflict(format!("tool {id} is used by agent `{agent}`")));
                }
                delete_on(ex, &TOOLS, &t, id.as_uuid()).await
            })
        }),
    )
    .await
}

fn setting_key(sql: &mut Sql, tenant: &TenantId, category: &SettingName, key: &SettingName) {
    sql.push(" WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND category = ").bind(category.as_str()).push(" AND key = ").bind(key.as_str());
}

/// [`memlayer_ports::CatalogStore::get_setting`].
pub async fn get_setting<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    category: &SettingName,
    key: &SettingName,
) -> Result<Option<Setting>, StoreError> {
    let mut sql = Sql::new(b.dialect());
    sql.push("SELECT value, updated_at FROM config_settings");
    setting_key(&mut sql, tenant, category, key);
    let row = b.read(tenant, work(move |ex| Box::pin(async move { ex.fetch_one("get setting", sql).await }))).await?;
    row.map(|row| {
        let r = Cells::new(&row, "config_settings");
        Ok(Setting {
            tenant: tenant.clone(),
            category: category.clone(),
            key: key.clone(),
            value: r.json(0, "value")?,
            updated_at: r.timestamp(1, "updated_at")?,
        })
    })
    .transpose()
}

/// [`memlayer_ports::CatalogStore::put_setting`].
pub async fn put_setting<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    category: &SettingName,
    key: &SettingName,
    value: serde_json::Value,
) -> Result<Setting, StoreError> {
    validate_setting_value(&value)?;
    let at = now();
    let mut sql = Sql::new(b.dialect());
    sql.push("INSERT INTO config_settings (tenant, category, key, value, updated_at) VALUES (");
    sql.bind(tenant.as_str()).push(", ").bind(category.as_str()).push(", ").bind(key.as_str());
    sql.push(", ").bind(SqlValue::Json(value.clone())).push(", ").bind(at);
    sql.push(
        ") ON CONFLICT (tenant, category, key) DO UPDATE SET value = excluded.value, \
         updated_at = excluded.updated_at",
    );
    b.write_serial(tenant, work(move |ex| Box::pin(async move { ex.execute("put setting", sql).await.map(drop) })))
        .await?;
    Ok(Setting { tenant: tenant.clone(), category: category.clone(), key: key.clone(), value, updated_at: at })
}

/// [`memlayer_ports::CatalogStore::delete_setting`].
pub async fn delete_setting<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    category: &SettingName,
    key: &SettingName,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(b.dialect());
    sql.push("DELETE FROM config_settings");
    setting_key(&mut sql, tenant, category, key);
    let n = b
        .write_serial(tenant, work(move |ex| Box::pin(async move { ex.execute("delete setting", sql).await })))
        .await?;
    if n == 0 {
        return Err(StoreError::not_found("setting", format!("{}/{}", category.as_str(), key.as_str())));
    }
    Ok(())
}

/// Implements `memlayer_ports::CatalogStore` for a backend type that
/// implements [`Transactor`], every method delegating to this module. A
/// macro, because the orphan rule forbids a blanket implementation here.
#[macro_export]
macro_rules! catalog_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::CatalogStore for $backend {
            async fn create_model(
                &self,
                tenant: &::memlayer_domain::TenantId,
                new: ::memlayer_domain::NewModel,
            ) -> Result<::memlayer_domain::ModelConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::create_model(self, tenant, new).await
            }
            async fn get_model(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::ModelId,
            ) -> Result<::memlayer_domain::ModelConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::get_model(self, tenant, id).await
            }
            async fn list_models(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::ListQuery,
            ) -> Result<
                ::memlayer_domain::Page<::memlayer_domain::ModelConfig, ::memlayer_domain::ListCursor>,
                ::memlayer_ports::StoreError,
            > {
                $crate::catalog::list_models(self, tenant, query).await
            }
            async fn update_model(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::ModelId,
                new: ::memlayer_domain::NewModel,
            ) -> Result<::memlayer_domain::ModelConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::update_model(self, tenant, id, new).await
            }
            async fn delete_model(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::ModelId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::catalog::delete_model(self, tenant, id).await
            }
            async fn create_agent(
                &self,
                tenant: &::memlayer_domain::TenantId,
                new: ::memlayer_domain::NewAgent,
            ) -> Result<::memlayer_domain::AgentConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::create_agent(self, tenant, new).await
            }
            async fn get_agent(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::AgentId,
            ) -> Result<::memlayer_domain::AgentConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::get_agent(self, tenant, id).await
            }
            async fn list_agents(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::ListQuery,
            ) -> Result<
                ::memlayer_domain::Page<::memlayer_domain::AgentConfig, ::memlayer_domain::ListCursor>,
                ::memlayer_ports::StoreError,
            > {
                $crate::catalog::list_agents(self, tenant, query).await
            }
            async fn update_agent(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::AgentId,
                new: ::memlayer_domain::NewAgent,
            ) -> Result<::memlayer_domain::AgentConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::update_agent(self, tenant, id, new).await
            }
            async fn delete_agent(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::AgentId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::catalog::delete_agent(self, tenant, id).await
            }
            async fn agent_tools(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::AgentId,
            ) -> Result<Vec<::memlayer_domain::ToolConfig>, ::memlayer_ports::StoreError> {
                $crate::catalog::agent_tools(self, tenant, id).await
            }
            async fn create_tool(
                &self,
                tenant: &::memlayer_domain::TenantId,
                new: ::memlayer_domain::NewTool,
            ) -> Result<::memlayer_domain::ToolConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::create_tool(self, tenant, new).await
            }
            async fn get_tool(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::ToolId,
            ) -> Result<::memlayer_domain::ToolConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::get_tool(self, tenant, id).await
            }
            async fn list_tools(
                &self,
                tenant: &::memlayer_domain::TenantId,
                query: &::memlayer_domain::ListQuery,
            ) -> Result<
                ::memlayer_domain::Page<::memlayer_domain::ToolConfig, ::memlayer_domain::ListCursor>,
                ::memlayer_ports::StoreError,
            > {
                $crate::catalog::list_tools(self, tenant, query).await
            }
            async fn update_tool(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::ToolId,
                new: ::memlayer_domain::NewTool,
            ) -> Result<::memlayer_domain::ToolConfig, ::memlayer_ports::StoreError> {
                $crate::catalog::update_tool(self, tenant, id, new).await
            }
            async fn delete_tool(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: ::memlayer_domain::ToolId,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::catalog::delete_tool(self, tenant, id).await
            }
            async fn get_setting(
                &self,
                tenant: &::memlayer_domain::TenantId,
                category: &::memlayer_domain::SettingName,
                key: &::memlayer_domain::SettingName,
            ) -> Result<Option<::memlayer_domain::Setting>, ::memlayer_ports::StoreError> {
                $crate::catalog::get_setting(self, tenant, category, key).await
            }
            async fn put_setting(
                &self,
                tenant: &::memlayer_domain::TenantId,
                category: &::memlayer_domain::SettingName,
                key: &::memlayer_domain::SettingName,
                value: ::serde_json::Value,
            ) -> Result<::memlayer_domain::Setting, ::memlayer_ports::StoreError> {
                $crate::catalog::put_setting(self, tenant, category, key, value).await
            }
            async fn delete_setting(
                &self,
                tenant: &::memlayer_domain::TenantId,
                category: &::memlayer_domain::SettingName,
                key: &::memlayer_domain::SettingName,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::catalog::delete_setting(self, tenant, category, key).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    fn check(dialect: Dialect, q: &ListQuery, contains: &[&str], ends_with: &str, params: usize) {
        let tenant = TenantId::parse("acme").unwrap();
        let sql = list_sql(dialect, &tenant, q).unwrap();
        for c in contains {
            assert!(sql.text().contains(c), "{dialect:?}: {c} not in {}", sql.text());
        }
        assert!(sql.text().ends_with(ends_with), "{dialect:?}: {}", sql.text());
        assert_eq!(sql.args().len(), params, "{:?}", sql.args());
        assert!(!sql.is_fixed(), "a listing's text depends on the caller's query");
    }

    #[test]
    fn caller_values_only_reach_sql_as_parameters() {
        let evil = "x') OR 1=1; DROP TABLE config_models;--";
        let q = ListQuery::new(CatalogEntity::Models)
            .filter("name", "eq", evil)
            .unwrap()
            .filter("provider", "in", &format!("{evil},b"))
            .unwrap()
            .filter("name", "contains", evil)
            .unwrap()
            .sort_by("-provider")
            .unwrap();
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let sql = list_sql(dialect, &TenantId::parse("acme").unwrap(), &q).unwrap();
            assert!(!sql.text().contains("DROP") && !sql.text().contains("OR 1=1"), "{}", sql.text());
            assert_eq!(sql.args().iter().filter(|p| **p == SqlValue::from(evil)).count(), 3, "{:?}", sql.args());
        }
        check(Dialect::Sqlite, &q, &["instr(name, ?5) > 0"], "ORDER BY provider DESC, id DESC LIMIT ?6", 6);
        check(
            Dialect::Postgres,
            &q,
            &["strpos(name COLLATE \"C\", $5) > 0"],
            "ORDER BY provider COLLATE \"C\" DESC, id DESC LIMIT $6",
            6,
        );
    }

    #[test]
    fn text_is_compared_bytewise_and_other_kinds_as_they_are() {
        let q = ListQuery::new(CatalogEntity::Models)
            .filter("name", "gt", "a")
            .unwrap()
            .filter("context_window", "gte", "5")
            .unwrap()
            .sort_by("name")
            .unwrap();
        check(
            Dialect::Postgres,
            &q,
            &[
                "SELECT id, name, provider",
                "FROM config_models WHERE tenant = $1",
                "name COLLATE \"C\" > $2 AND context_window >= $3",
            ],
            "ORDER BY name COLLATE \"C\" ASC, id ASC LIMIT $4",
            4,
        );
        check(Dialect::Sqlite, &q, &["name > ?2 AND context_window >= ?3"], "ORDER BY name ASC, id ASC LIMIT ?4", 4);
    }

    #[test]
    fn an_agents_tools_are_matched_through_their_link_rows() {
        let tool = Uuid::now_v7();
        let q = ListQuery::new(CatalogEntity::Agents).filter("tool_ids", "contains", &tool.to_string()).unwrap();
        let sql = list_sql(Dialect::Sqlite, &TenantId::parse("acme").unwrap(), &q).unwrap();
        assert!(
            sql.text().contains(
                "AND EXISTS (SELECT 1 FROM config_agent_tools t WHERE t.agent_id = config_agents.id AND t.tool_id = ?2)"
            ),
            "{}",
            sql.text()
        );
        assert_eq!(sql.args()[1], SqlValue::Uuid(tool));
        // Text that is not a UUID matches nothing: bound as NULL.
        let q = ListQuery::new(CatalogEntity::Agents).filter("tool_ids", "contains", "nope").unwrap();
        let sql = list_sql(Dialect::Postgres, &TenantId::parse("acme").unwrap(), &q).unwrap();
        assert_eq!(sql.args()[1], SqlValue::Null);
    }

    #[test]
    fn a_resumed_listing_continues_after_its_cursor_key() {
        let tenant = TenantId::parse("acme").unwrap();
        let q = ListQuery::new(CatalogEntity::Tools).sort_by("-created_at").unwrap();
        let tool = ToolConfig {
            id: ToolId::new(),
            tenant: tenant.clone(),
            spec: NewTool { name: "t".into(), description: "d".into(), parameters: serde_json::json!({}) },
            created_at: now(),
            updated_at: now(),
        };
        let cursor = q.cursor_after(&tenant, &tool).unwrap();
        let q = q.resume(&tenant, &cursor).unwrap();
        check(
            Dialect::Postgres,
            &q,
            &[" AND (created_at < $2 OR (created_at = $2 AND id < $3))"],
            "ORDER BY created_at DESC, id DESC LIMIT $4",
            4,
        );
    }
}
