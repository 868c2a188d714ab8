//! [`ConfigStore`] on Postgres: models, tools, agents and settings (migration 4).
//!
//! Behaves as the libSQL adapter's `configs.rs`, call for call: the same
//! checks in the same order, the same errors and messages.
//!
//! Listings are built from fixed SQL fragments: a declared field maps to a
//! static column name here ([`column`]), operators to fixed SQL operators,
//! and every value is a numbered parameter (`$n`). Nothing a caller wrote
//! becomes SQL text. Text compares bytewise (`COLLATE "C"`), `contains` on
//! text is `strpos(…) > 0` (no pattern characters), on an agent's tools a
//! membership test on its ordered rows.
//!
//! Every write takes a transaction-level advisory lock on its tenant first,
//! so that the configuration writes of one tenant are serial, as every write
//! is on libSQL: moving the default flag or checking a name or a reference
//! and then writing cannot interleave with another such write (the unique
//! indexes and foreign keys still hold if they did).

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use memlayer_adapters_sql::SqlOp as _;
use memlayer_domain::{
    AgentConfig, AgentConfigId, AgentId, ConfigEntity, DomainError, FieldKind, FieldSpec, FieldValue, ListCursor,
    ListQuery, MemoryOptions, ModelConfig, ModelId, NewAgent, NewModel, NewTool, Op, Page, Setting, SettingName,
    TenantId, Timestamp, ToolConfig, ToolId, now, validate_setting_value,
};
use memlayer_ports::{ConfigStore, StoreError};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::{Context as _, DriverError, corrupt};
use crate::rows::RowReader;
use crate::threads::{Param, refs};

const MODEL_COLUMNS: &str = "id, name, provider, context_window, max_output_tokens, input_price, output_price, \
     is_default, created_at, updated_at";
const TOOL_COLUMNS: &str = "id, name, description, parameters, created_at, updated_at";
/// An agent's columns, with its tools in order as one `uuid[]` column.
const AGENT_COLUMNS: &str = "id, name, model_id, system_prompt, last_n, top_k, token_budget, created_at, updated_at, \
     ARRAY(SELECT t.tool_id FROM config_agent_tools t WHERE t.agent_id = config_agents.id ORDER BY t.position) \
     AS tool_ids";

/// First key of the per-tenant configuration write lock (`pg_advisory_xact_lock(int, int)`;
/// the second is the tenant's hash). "mcfg" in ASCII.
const CONFIG_LOCK: i32 = 0x6d63_6667;

/// The static column of a declared field; `None` for a field this adapter
/// does not know (a domain declaration it was not updated for).
fn column(entity: ConfigEntity, field: &str) -> Option<&'static str> {
    use ConfigEntity::{Agents, Models, Tools};
    Some(match (entity, field) {
        (_, "name") => "name",
        (_, "created_at") => "created_at",
        (_, "updated_at") => "updated_at",
        (Models, "provider") => "provider",
        (Models, "context_window") => "context_window",
        (Models, "max_output_tokens") => "max_output_tokens",
        (Models, "input_price") => "input_price",
        (Models, "output_price") => "output_price",
        (Models, "is_default") => "is_default",
        (Agents, "model_id") => "model_id",
        (Agents, "tool_ids") => "tool_ids",
        (Tools, "description") => "description",
        _ => return None,
    })
}

fn table(entity: ConfigEntity) -> (&'static str, &'static str) {
    match entity {
        ConfigEntity::Models => ("config_models", MODEL_COLUMNS),
        ConfigEntity::Agents => ("config_agents", AGENT_COLUMNS),
        ConfigEntity::Tools => ("config_tools", TOOL_COLUMNS),
    }
}

fn unknown(name: &str) -> StoreError {
    StoreError::backend(DriverError::new("list", format!("no column for declared field {name}")))
}

/// The SQL expression of a declared field: its column, compared bytewise
/// when it is text (the columns are `COLLATE "C"` already; saying it here
/// keeps the listing bytewise whatever the schema says).
fn expr(entity: ConfigEntity, spec: &FieldSpec) -> Result<String, StoreError> {
    let col = column(entity, spec.name).ok_or_else(|| unknown(spec.name))?;
    Ok(if spec.kind == FieldKind::Text { format!("{col} COLLATE \"C\"") } else { col.to_owned() })
}

fn param(v: &FieldValue) -> Param {
    match v {
        FieldValue::Text(s) => Box::new(s.clone()),
        FieldValue::Integer(i) => Box::new(*i),
        FieldValue::Float(f) => Box::new(*f),
        FieldValue::Bool(b) => Box::new(*b),
        FieldValue::Timestamp(t) => Box::new(*t),
        FieldValue::Id(u) => Box::new(*u),
    }
}

/// The listing query for `query`: `SELECT … WHERE tenant = $1 AND …
/// ORDER BY col, id LIMIT page + 1`.
pub(crate) fn list_sql(tenant: &TenantId, query: &ListQuery) -> Result<(String, Vec<Param>), StoreError> {
    let entity = query.entity();
    let (tbl, columns) = table(entity);
    let mut sql = format!("SELECT {columns} FROM {tbl} WHERE tenant = $1");
    let mut params: Vec<Param> = vec![Box::new(tenant.as_str().to_owned())];
    let bind = |params: &mut Vec<Param>, v: Param| {
        params.push(v);
        format!("${}", params.len())
    };
    for f in query.filters() {
        let spec = f.field();
        let col = expr(entity, spec)?;
        if spec.kind == FieldKind::TextList {
            // `tool_ids contains X`: X names a tool by its UUID; text that is
            // not a UUID matches nothing (bound as NULL, equal to no id).
            let v: Option<Uuid> = match f.values() {
                [FieldValue::Text(s)] => s.parse().ok(),
                _ => return Err(unknown(spec.name)),
            };
            let p = bind(&mut params, Box::new(v));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM config_agent_tools t WHERE t.agent_id = config_agents.id AND t.tool_id = {p})"
            ));
            continue;
        }
        let values = f.values();
        let cond = match f.op() {
            Op::In => {
                let ps: Vec<String> = values.iter().map(|v| bind(&mut params, param(v))).collect();
                format!("{col} IN ({})", ps.join(", "))
            }
            Op::Contains => {
                let p = bind(&mut params, param(&values[0]));
                format!("strpos({col}, {p}) > 0")
            }
            op => {
                let sym = op.sql_comparison().ok_or_else(|| unknown(spec.name))?;
                let p = bind(&mut params, param(&values[0]));
                format!("{col} {sym} {p}")
            }
        };
        sql.push_str(" AND ");
        sql.push_str(&cond);
    }
    let sort = query.sort();
    let col = expr(entity, sort.field())?;
    let (cmp, dir) = if sort.descending() { ("<", "DESC") } else { (">", "ASC") };
    if let Some(after) = query.after() {
        let v = bind(&mut params, param(&after.value));
        let id = bind(&mut params, Box::new(after.id));
        sql.push_str(&format!(" AND ({col} {cmp} {v} OR ({col} = {v} AND id {cmp} {id}))"));
    }
    let limit = i64::from(query.page_size().get()) + 1;
    let n = bind(&mut params, Box::new(limit));
    sql.push_str(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT {n}"));
    Ok((sql, params))
}

fn u32_of(table: &'static str, column: &'static str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|e| corrupt(table, column, e))
}

fn model_row(row: &Row, tenant: &TenantId) -> Result<ModelConfig, StoreError> {
    let r = RowReader::new(row, "config_models");
    let u32_col = |column| u32_of("config_models", column, r.get::<i64>(column)?);
    Ok(ModelConfig {
        id: ModelId::from_uuid(r.get("id")?),
        tenant: tenant.clone(),
        spec: NewModel {
            name: r.get("name")?,
            provider: r.get("provider")?,
            context_window: u32_col("context_window")?,
            max_output_tokens: u32_col("max_output_tokens")?,
            input_price: r.get("input_price")?,
            output_price: r.get("output_price")?,
            is_default: r.get("is_default")?,
        },
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

fn tool_row(row: &Row, tenant: &TenantId) -> Result<ToolConfig, StoreError> {
    let r = RowReader::new(row, "config_tools");
    Ok(ToolConfig {
        id: ToolId::from_uuid(r.get("id")?),
        tenant: tenant.clone(),
        spec: NewTool { name: r.get("name")?, description: r.get("description")?, parameters: r.get("parameters")? },
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

/// An agent row, its tools included (the `tool_ids` array of [`AGENT_COLUMNS`]).
fn agent_row(row: &Row, tenant: &TenantId) -> Result<AgentConfig, StoreError> {
    let r = RowReader::new(row, "config_agents");
    let opt = |column| r.get::<Option<i64>>(column)?.map(|v| u32_of("config_agents", column, v)).transpose();
    Ok(AgentConfig {
        id: AgentConfigId::from_uuid(r.get("id")?),
        tenant: tenant.clone(),
        spec: NewAgent {
            name: r.parse("name", AgentId::parse)?,
            model_id: ModelId::from_uuid(r.get("model_id")?),
            system_prompt: r.get("system_prompt")?,
            tool_ids: r.get::<Vec<Uuid>>("tool_ids")?.into_iter().map(ToolId::from_uuid).collect(),
            memory: MemoryOptions { last_n: opt("last_n")?, top_k: opt("top_k")?, token_budget: opt("token_budget")? },
        },
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

/// Takes the tenant's configuration write lock until the end of `tx`.
async fn lock(tx: &Transaction<'_>, tenant: &TenantId) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))").await.ctx("lock configuration")?;
    tx.execute(&stmt, &[&CONFIG_LOCK, &tenant.as_str()]).await.ctx("lock configuration")?;
    Ok(())
}

/// The first row of a fixed statement, if any.
async fn one(
    tx: &Transaction<'_>,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let stmt = tx.prepare_cached(sql).await.ctx(context)?;
    tx.query_opt(&stmt, params).await.ctx(context)
}

async fn exec(
    tx: &Transaction<'_>,
    context: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = tx.prepare_cached(sql).await.ctx(context)?;
    tx.execute(&stmt, params).await.ctx(context)
}

/// `Conflict` when another row of the tenant in `tbl` has `name`.
async fn name_free(
    tx: &Transaction<'_>,
    tbl: &'static str,
    what: &str,
    tenant: &TenantId,
    name: &str,
    except: Option<Uuid>,
) -> Result<(), StoreError> {
    let sql = format!("SELECT 1 FROM {tbl} WHERE tenant = $1 AND name = $2 AND id IS DISTINCT FROM $3");
    if one(tx, "check name", &sql, &[&tenant.as_str(), &name, &except]).await?.is_some() {
        return Err(StoreError::Conflict(format!("a {what} named `{name}` already exists")));
    }
    Ok(())
}

/// `NotFound` unless the row exists for the tenant.
async fn must_exist(
    tx: &Transaction<'_>,
    tbl: &'static str,
    what: &'static str,
    tenant: &TenantId,
    id: Uuid,
) -> Result<(), StoreError> {
    let sql = format!("SELECT 1 FROM {tbl} WHERE tenant = $1 AND id = $2");
    if one(tx, "look up", &sql, &[&tenant.as_str(), &id]).await?.is_some() {
        Ok(())
    } else {
        Err(StoreError::not_found(what, id))
    }
}

/// Clears the tenant's default flag on every model but `keep`.
async fn clear_default(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    keep: ModelId,
    at: Timestamp,
) -> Result<(), StoreError> {
    exec(
        tx,
        "clear default model",
        "UPDATE config_models SET is_default = false, updated_at = $3 \
         WHERE tenant = $1 AND is_default AND id <> $2",
        &[&tenant.as_str(), &keep.as_uuid(), &at],
    )
    .await?;
    Ok(())
}

/// Checks an agent's references inside the write transaction: `Invalid`
/// for a model or tool the tenant does not have.
async fn check_agent_refs(tx: &Transaction<'_>, tenant: &TenantId, new: &NewAgent) -> Result<(), StoreError> {
    let model_sql = "SELECT 1 FROM config_models WHERE tenant = $1 AND id = $2";
    if one(tx, "check agent model", model_sql, &[&tenant.as_str(), &new.model_id.as_uuid()]).await?.is_none() {
        return Err(DomainError::new("model_id", format!("model {} does not exist", new.model_id)).into());
    }
    let tool_sql = "SELECT 1 FROM config_tools WHERE tenant = $1 AND id = $2";
    for t in &new.tool_ids {
        if one(tx, "check agent tools", tool_sql, &[&tenant.as_str(), &t.as_uuid()]).await?.is_none() {
            return Err(DomainError::new("tool_ids", format!("tool {t} does not exist")).into());
        }
    }
    Ok(())
}

/// Replaces the agent's tool rows with `tools`, positions 0, 1, … in order.
async fn write_agent_tools(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    id: AgentConfigId,
    tools: &[ToolId],
) -> Result<(), StoreError> {
    exec(tx, "write agent tools", "DELETE FROM config_agent_tools WHERE agent_id = $1", &[&id.as_uuid()]).await?;
    let ids: Vec<Uuid> = tools.iter().map(|t| t.as_uuid()).collect();
    exec(
        tx,
        "write agent tools",
        "INSERT INTO config_agent_tools (tenant, agent_id, position, tool_id) \
         SELECT $1, $2, (n - 1)::integer, tool FROM unnest($3::uuid[]) WITH ORDINALITY AS given (tool, n)",
        &[&tenant.as_str(), &id.as_uuid(), &ids],
    )
    .await?;
    Ok(())
}

fn memory_params(m: &MemoryOptions) -> [Option<i64>; 3] {
    let v = |x: Option<u32>| x.map(i64::from);
    [v(m.last_n), v(m.top_k), v(m.token_budget)]
}

async fn get_agent_on(tx: &Transaction<'_>, tenant: &TenantId, id: AgentConfigId) -> Result<AgentConfig, StoreError> {
    let sql = format!("SELECT {AGENT_COLUMNS} FROM config_agents WHERE tenant = $1 AND id = $2");
    let row = one(tx, "get agent", &sql, &[&tenant.as_str(), &id.as_uuid()]).await?;
    row.as_ref().map(|r| agent_row(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found("agent", id))
}

/// Cuts a `limit + 1` read to a page and its cursor.
fn page<T: memlayer_domain::ConfigRecord>(
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

fn check_entity(query: &ListQuery, want: ConfigEntity) -> Result<(), StoreError> {
    if query.entity() == want {
        Ok(())
    } else {
        Err(DomainError::new("query", format!("lists {}, not {}", query.entity().as_str(), want.as_str())).into())
    }
}

impl PgBackend {
    async fn list_rows<T>(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
        want: ConfigEntity,
        decode: fn(&Row, &TenantId) -> Result<T, StoreError>,
    ) -> Result<Page<T, ListCursor>, StoreError>
    where
        T: memlayer_domain::ConfigRecord,
    {
        check_entity(query, want)?;
        let (sql, params) = list_sql(tenant, query)?;
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let rows = tx.query(&sql, &refs(&params)).await.ctx("list configuration")?;
        tx.commit().await.ctx("list configuration")?;
        let items = rows.iter().map(|r| decode(r, tenant)).collect::<Result<Vec<_>, _>>()?;
        page(tenant, query, items)
    }
}

#[async_trait]
impl ConfigStore for PgBackend {
    async fn create_model(&self, tenant: &TenantId, new: NewModel) -> Result<ModelConfig, StoreError> {
        new.validate()?;
        let at = now();
        let created =
            ModelConfig { id: ModelId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
        let spec = &created.spec;
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        name_free(&tx, "config_models", "model", tenant, &spec.name, None).await?;
        if spec.is_default {
            clear_default(&tx, tenant, created.id, at).await?;
        }
        exec(
            &tx,
            "create model",
            "INSERT INTO config_models (id, tenant, name, provider, context_window, max_output_tokens, \
             input_price, output_price, is_default, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            &[
                &created.id.as_uuid(),
                &tenant.as_str(),
                &spec.name,
                &spec.provider,
                &i64::from(spec.context_window),
                &i64::from(spec.max_output_tokens),
                &spec.input_price,
                &spec.output_price,
                &spec.is_default,
                &at,
            ],
        )
        .await?;
        tx.commit().await.ctx("create model")?;
        Ok(created)
    }

    async fn get_model(&self, tenant: &TenantId, id: ModelId) -> Result<ModelConfig, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let sql = format!("SELECT {MODEL_COLUMNS} FROM config_models WHERE tenant = $1 AND id = $2");
        let row = one(&tx, "get model", &sql, &[&tenant.as_str(), &id.as_uuid()]).await?;
        tx.commit().await.ctx("get model")?;
        row.as_ref().map(|r| model_row(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found("model", id))
    }

    async fn list_models(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ModelConfig, ListCursor>, StoreError> {
        self.list_rows(tenant, query, ConfigEntity::Models, model_row).await
    }

    async fn update_model(&self, tenant: &TenantId, id: ModelId, new: NewModel) -> Result<ModelConfig, StoreError> {
        new.validate()?;
        let at = now();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        must_exist(&tx, "config_models", "model", tenant, id.as_uuid()).await?;
        name_free(&tx, "config_models", "model", tenant, &new.name, Some(id.as_uuid())).await?;
        if new.is_default {
            clear_default(&tx, tenant, id, at).await?;
        }
        let sql = format!(
            "UPDATE config_models SET name = $3, provider = $4, context_window = $5, max_output_tokens = $6, \
             input_price = $7, output_price = $8, is_default = $9, updated_at = $10 \
             WHERE tenant = $2 AND id = $1 RETURNING {MODEL_COLUMNS}"
        );
        let row = one(
            &tx,
            "update model",
            &sql,
            &[
                &id.as_uuid(),
                &tenant.as_str(),
                &new.name,
                &new.provider,
                &i64::from(new.context_window),
                &i64::from(new.max_output_tokens),
                &new.input_price,
                &new.output_price,
                &new.is_default,
                &at,
            ],
        )
        .await?;
        let updated = row
            .as_ref()
            .map(|r| model_row(r, tenant))
            .transpose()?
            .ok_or_else(|| StoreError::not_found("model", id))?;
        tx.commit().await.ctx("update model")?;
        Ok(updated)
    }

    async fn delete_model(&self, tenant: &TenantId, id: ModelId) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        must_exist(&tx, "config_models", "model", tenant, id.as_uuid()).await?;
        let used = one(
            &tx,
            "delete model",
            "SELECT name FROM config_agents WHERE tenant = $1 AND model_id = $2 LIMIT 1",
            &[&tenant.as_str(), &id.as_uuid()],
        )
        .await?;
        if let Some(row) = used {
            let agent: String = RowReader::new(&row, "config_agents").get("name")?;
            return Err(StoreError::Conflict(format!("model {id} is used by agent `{agent}`")));
        }
        exec(
            &tx,
            "delete model",
            "DELETE FROM config_models WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &id.as_uuid()],
        )
        .await?;
        tx.commit().await.ctx("delete model")?;
        Ok(())
    }

    async fn create_agent(&self, tenant: &TenantId, new: NewAgent) -> Result<AgentConfig, StoreError> {
        new.validate()?;
        let at = now();
        let created =
            AgentConfig { id: AgentConfigId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
        let spec = &created.spec;
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        check_agent_refs(&tx, tenant, spec).await?;
        name_free(&tx, "config_agents", "agent", tenant, spec.name.as_str(), None).await?;
        let [last_n, top_k, token_budget] = memory_params(&spec.memory);
        exec(
            &tx,
            "create agent",
            "INSERT INTO config_agents (id, tenant, name, model_id, system_prompt, last_n, top_k, token_budget, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            &[
                &created.id.as_uuid(),
                &tenant.as_str(),
                &spec.name.as_str(),
                &spec.model_id.as_uuid(),
                &spec.system_prompt,
                &last_n,
                &top_k,
                &token_budget,
                &at,
            ],
        )
        .await?;
        write_agent_tools(&tx, tenant, created.id, &spec.tool_ids).await?;
        tx.commit().await.ctx("create agent")?;
        Ok(created)
    }

    async fn get_agent(&self, tenant: &TenantId, id: AgentConfigId) -> Result<AgentConfig, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let agent = get_agent_on(&tx, tenant, id).await?;
        tx.commit().await.ctx("get agent")?;
        Ok(agent)
    }

    async fn list_agents(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<AgentConfig, ListCursor>, StoreError> {
        self.list_rows(tenant, query, ConfigEntity::Agents, agent_row).await
    }

    async fn update_agent(
        &self,
        tenant: &TenantId,
        id: AgentConfigId,
        new: NewAgent,
    ) -> Result<AgentConfig, StoreError> {
        new.validate()?;
        let at = now();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        must_exist(&tx, "config_agents", "agent", tenant, id.as_uuid()).await?;
        check_agent_refs(&tx, tenant, &new).await?;
        name_free(&tx, "config_agents", "agent", tenant, new.name.as_str(), Some(id.as_uuid())).await?;
        let [last_n, top_k, token_budget] = memory_params(&new.memory);
        exec(
            &tx,
            "update agent",
            "UPDATE config_agents SET name = $3, model_id = $4, system_prompt = $5, last_n = $6, top_k = $7, \
             token_budget = $8, updated_at = $9 WHERE tenant = $2 AND id = $1",
            &[
                &id.as_uuid(),
                &tenant.as_str(),
                &new.name.as_str(),
                &new.model_id.as_uuid(),
                &new.system_prompt,
                &last_n,
                &top_k,
                &token_budget,
                &at,
            ],
        )
        .await?;
        write_agent_tools(&tx, tenant, id, &new.tool_ids).await?;
        let updated = get_agent_on(&tx, tenant, id).await?;
        tx.commit().await.ctx("update agent")?;
        Ok(updated)
    }

    async fn delete_agent(&self, tenant: &TenantId, id: AgentConfigId) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        // Its tool rows go by ON DELETE CASCADE, in this statement.
        let n = exec(
            &tx,
            "delete agent",
            "DELETE FROM config_agents WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &id.as_uuid()],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::not_found("agent", id));
        }
        tx.commit().await.ctx("delete agent")?;
        Ok(())
    }

    async fn agent_tools(&self, tenant: &TenantId, id: AgentConfigId) -> Result<Vec<ToolConfig>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        must_exist(&tx, "config_agents", "agent", tenant, id.as_uuid()).await?;
        let columns = TOOL_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {columns} FROM config_agent_tools a \
                 JOIN config_tools t ON t.tenant = a.tenant AND t.id = a.tool_id \
                 WHERE a.agent_id = $1 AND a.tenant = $2 ORDER BY a.position"
            ))
            .await
            .ctx("agent tools")?;
        let rows = tx.query(&stmt, &[&id.as_uuid(), &tenant.as_str()]).await.ctx("agent tools")?;
        tx.commit().await.ctx("agent tools")?;
        rows.iter().map(|r| tool_row(r, tenant)).collect()
    }

    async fn create_tool(&self, tenant: &TenantId, new: NewTool) -> Result<ToolConfig, StoreError> {
        new.validate()?;
        let at = now();
        let created =
            ToolConfig { id: ToolId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
        let spec = &created.spec;
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        name_free(&tx, "config_tools", "tool", tenant, &spec.name, None).await?;
        exec(
            &tx,
            "create tool",
            "INSERT INTO config_tools (id, tenant, name, description, parameters, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
            &[&created.id.as_uuid(), &tenant.as_str(), &spec.name, &spec.description, &spec.parameters, &at],
        )
        .await?;
        tx.commit().await.ctx("create tool")?;
        Ok(created)
    }

    async fn get_tool(&self, tenant: &TenantId, id: ToolId) -> Result<ToolConfig, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let sql = format!("SELECT {TOOL_COLUMNS} FROM config_tools WHERE tenant = $1 AND id = $2");
        let row = one(&tx, "get tool", &sql, &[&tenant.as_str(), &id.as_uuid()]).await?;
        tx.commit().await.ctx("get tool")?;
        row.as_ref().map(|r| tool_row(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found("tool", id))
    }

    async fn list_tools(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ToolConfig, ListCursor>, StoreError> {
        self.list_rows(tenant, query, ConfigEntity::Tools, tool_row).await
    }

    async fn update_tool(&self, tenant: &TenantId, id: ToolId, new: NewTool) -> Result<ToolConfig, StoreError> {
        new.validate()?;
        let at = now();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        must_exist(&tx, "config_tools", "tool", tenant, id.as_uuid()).await?;
        name_free(&tx, "config_tools", "tool", tenant, &new.name, Some(id.as_uuid())).await?;
        let sql = format!(
            "UPDATE config_tools SET name = $3, description = $4, parameters = $5, updated_at = $6 \
             WHERE tenant = $2 AND id = $1 RETURNING {TOOL_COLUMNS}"
        );
        let row = one(
            &tx,
            "update tool",
            &sql,
            &[&id.as_uuid(), &tenant.as_str(), &new.name, &new.description, &new.parameters, &at],
        )
        .await?;
        let updated =
            row.as_ref().map(|r| tool_row(r, tenant)).transpose()?.ok_or_else(|| StoreError::not_found("tool", id))?;
        tx.commit().await.ctx("update tool")?;
        Ok(updated)
    }

    async fn delete_tool(&self, tenant: &TenantId, id: ToolId) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        lock(&tx, tenant).await?;
        must_exist(&tx, "config_tools", "tool", tenant, id.as_uuid()).await?;
        let used = one(
            &tx,
            "delete tool",
            "SELECT g.name FROM config_agent_tools a JOIN config_agents g ON g.id = a.agent_id \
             WHERE a.tenant = $1 AND a.tool_id = $2 LIMIT 1",
            &[&tenant.as_str(), &id.as_uuid()],
        )
        .await?;
        if let Some(row) = used {
            let agent: String = RowReader::new(&row, "config_agents").get("name")?;
            return Err(StoreError::Conflict(format!("tool {id} is used by agent `{agent}`")));
        }
        exec(
            &tx,
            "delete tool",
            "DELETE FROM config_tools WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &id.as_uuid()],
        )
        .await?;
        tx.commit().await.ctx("delete tool")?;
        Ok(())
    }

    async fn get_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<Option<Setting>, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let row = one(
            &tx,
            "get setting",
            "SELECT value, updated_at FROM config_settings WHERE tenant = $1 AND category = $2 AND key = $3",
            &[&tenant.as_str(), &category.as_str(), &key.as_str()],
        )
        .await?;
        tx.commit().await.ctx("get setting")?;
        row.map(|row| {
            let r = RowReader::new(&row, "config_settings");
            Ok(Setting {
                tenant: tenant.clone(),
                category: category.clone(),
                key: key.clone(),
                value: r.get("value")?,
                updated_at: r.get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn put_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
        value: serde_json::Value,
    ) -> Result<Setting, StoreError> {
        validate_setting_value(&value)?;
        let at = now();
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        exec(
            &tx,
            "put setting",
            "INSERT INTO config_settings (tenant, category, key, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant, category, key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
            &[&tenant.as_str(), &category.as_str(), &key.as_str(), &value, &at],
        )
        .await?;
        tx.commit().await.ctx("put setting")?;
        Ok(Setting { tenant: tenant.clone(), category: category.clone(), key: key.clone(), value, updated_at: at })
    }

    async fn delete_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let n = exec(
            &tx,
            "delete setting",
            "DELETE FROM config_settings WHERE tenant = $1 AND category = $2 AND key = $3",
            &[&tenant.as_str(), &category.as_str(), &key.as_str()],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::not_found("setting", format!("{}/{}", category.as_str(), key.as_str())));
        }
        tx.commit().await.ctx("delete setting")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn every_declared_field_has_a_column() {
        for entity in [ConfigEntity::Models, ConfigEntity::Agents, ConfigEntity::Tools] {
            for f in entity.fields() {
                assert!(column(entity, f.name).is_some(), "{entity:?}.{} has no column", f.name);
            }
        }
    }

    #[test]
    fn caller_values_only_reach_sql_as_parameters() {
        let tenant = TenantId::parse("acme").unwrap();
        let evil = "x') OR 1=1; DROP TABLE config_models;--";
        let q = ListQuery::new(ConfigEntity::Models)
            .filter("name", "eq", evil)
            .unwrap()
            .filter("provider", "in", &format!("{evil},b"))
            .unwrap()
            .filter("name", "contains", evil)
            .unwrap()
            .sort_by("-provider")
            .unwrap();
        let (sql, params) = list_sql(&tenant, &q).unwrap();
        assert!(!sql.contains("DROP") && !sql.contains("OR 1=1"), "{sql}");
        let quoted = format!("{evil:?}");
        assert_eq!(params.iter().filter(|p| format!("{p:?}") == quoted).count(), 3, "{params:?}");
        assert!(sql.contains("strpos(name COLLATE \"C\", $5) > 0"), "{sql}");
        assert!(sql.ends_with("ORDER BY provider COLLATE \"C\" DESC, id DESC LIMIT $6"), "{sql}");
    }

    #[test]
    fn text_is_compared_bytewise_and_other_kinds_as_they_are() {
        let tenant = TenantId::parse("acme").unwrap();
        let q = ListQuery::new(ConfigEntity::Models)
            .filter("name", "gt", "a")
            .unwrap()
            .filter("context_window", "gte", "5")
            .unwrap()
            .sort_by("name")
            .unwrap();
        let (sql, params) = list_sql(&tenant, &q).unwrap();
        assert!(sql.contains("name COLLATE \"C\" > $2 AND context_window >= $3"), "{sql}");
        assert!(sql.ends_with("ORDER BY name COLLATE \"C\" ASC, id ASC LIMIT $4"), "{sql}");
        assert_eq!(params.len(), 4);
    }
}
