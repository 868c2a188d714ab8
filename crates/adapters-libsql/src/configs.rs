//! [`ConfigStore`] on libSQL: models, tools, agents and settings (migration 4).
//!
//! Listings are built from fixed SQL fragments: a declared field maps to a
//! static column name here ([`column`]), operators to fixed SQL operators,
//! and every value is a numbered parameter. Nothing a caller wrote becomes
//! SQL text.

use async_trait::async_trait;
use libsql::{Connection, Row, Value};
use memlayer_adapters_sql::SqlOp as _;
use memlayer_domain::{
    AgentConfig, AgentConfigId, AgentId, ConfigEntity, DomainError, FieldKind, FieldValue, ListCursor, ListQuery,
    MemoryOptions, ModelConfig, ModelId, NewAgent, NewModel, NewTool, Op, Page, Setting, SettingName, TenantId,
    ToolConfig, ToolId, from_micros, now, to_micros, validate_setting_value,
};
use memlayer_ports::{ConfigStore, StoreError};

use crate::LibsqlBackend;
use crate::error::{Context as _, corrupt};
use crate::rows::{RowReader, query_row};
use crate::values::{json_text, text, uuid};

const MODEL_COLUMNS: &str = "id, name, provider, context_window, max_output_tokens, input_price, output_price, \
     is_default, created_at, updated_at";
const TOOL_COLUMNS: &str = "id, name, description, parameters, created_at, updated_at";
const AGENT_COLUMNS: &str = "id, name, model_id, system_prompt, last_n, top_k, token_budget, created_at, updated_at";

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

fn bind_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Text(s) => Value::Text(s.clone()),
        FieldValue::Integer(i) => Value::Integer(*i),
        FieldValue::Float(f) => Value::Real(*f),
        FieldValue::Bool(b) => Value::Integer(i64::from(*b)),
        FieldValue::Timestamp(t) => Value::Integer(to_micros(*t)),
        FieldValue::Id(u) => uuid(*u),
    }
}

/// The listing query for `query`: `SELECT … WHERE tenant = ?1 AND …
/// ORDER BY col, id LIMIT page + 1`.
pub(crate) fn list_sql(tenant: &TenantId, query: &ListQuery) -> Result<(String, Vec<Value>), StoreError> {
    let entity = query.entity();
    let (tbl, columns) = table(entity);
    let unknown = |name: &str| {
        StoreError::backend(crate::error::DriverError::new("list", format!("no column for declared field {name}")))
    };
    let mut sql = format!("SELECT {columns} FROM {tbl} WHERE tenant = ?1");
    let mut params = vec![text(tenant.as_str())];
    let bind = |params: &mut Vec<Value>, v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    for f in query.filters() {
        let spec = f.field();
        let col = column(entity, spec.name).ok_or_else(|| unknown(spec.name))?;
        if spec.kind == FieldKind::TextList {
            // `tool_ids contains X`: X names a tool by its UUID; text that is
            // not a UUID matches nothing (bound as text, never equal to a blob).
            let v = match f.values() {
                [FieldValue::Text(s)] => s.parse::<uuid::Uuid>().map_or_else(|_| Value::Text(s.clone()), uuid),
                _ => return Err(unknown(spec.name)),
            };
            let p = bind(&mut params, v);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM config_agent_tools t WHERE t.agent_id = config_agents.id AND t.tool_id = {p})"
            ));
            continue;
        }
        let values = f.values();
        let cond = match f.op() {
            Op::In => {
                let ps: Vec<String> = values.iter().map(|v| bind(&mut params, bind_value(v))).collect();
                format!("{col} IN ({})", ps.join(", "))
            }
            Op::Contains => {
                let p = bind(&mut params, bind_value(&values[0]));
                format!("instr({col}, {p}) > 0")
            }
            op => {
                let sym = op.sql_comparison().ok_or_else(|| unknown(spec.name))?;
                let p = bind(&mut params, bind_value(&values[0]));
                format!("{col} {sym} {p}")
            }
        };
        sql.push_str(" AND ");
        sql.push_str(&cond);
    }
    let sort = query.sort();
    let col = column(entity, sort.field().name).ok_or_else(|| unknown(sort.field().name))?;
    let (cmp, dir) = if sort.descending() { ("<", "DESC") } else { (">", "ASC") };
    if let Some(after) = query.after() {
        let v = bind(&mut params, bind_value(&after.value));
        let id = bind(&mut params, uuid(after.id));
        sql.push_str(&format!(" AND ({col} {cmp} {v} OR ({col} = {v} AND id {cmp} {id}))"));
    }
    let limit = i64::from(query.page_size().get()) + 1;
    let n = bind(&mut params, Value::Integer(limit));
    sql.push_str(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT {n}"));
    Ok((sql, params))
}

fn model_row(row: &Row, tenant: &TenantId) -> Result<ModelConfig, StoreError> {
    let r = RowReader::new(row, "config_models");
    let u32_col = |idx, column| u32::try_from(r.int(idx, column)?).map_err(|e| corrupt("config_models", column, e));
    Ok(ModelConfig {
        id: ModelId::from_uuid(r.uuid(0, "id")?),
        tenant: tenant.clone(),
        spec: NewModel {
            name: r.text(1, "name")?,
            provider: r.text(2, "provider")?,
            context_window: u32_col(3, "context_window")?,
            max_output_tokens: u32_col(4, "max_output_tokens")?,
            input_price: r.real(5, "input_price")?,
            output_price: r.real(6, "output_price")?,
            is_default: r.int(7, "is_default")? != 0,
        },
        created_at: from_micros(r.int(8, "created_at")?),
        updated_at: from_micros(r.int(9, "updated_at")?),
    })
}

fn tool_row(row: &Row, tenant: &TenantId) -> Result<ToolConfig, StoreError> {
    let r = RowReader::new(row, "config_tools");
    Ok(ToolConfig {
        id: ToolId::from_uuid(r.uuid(0, "id")?),
        tenant: tenant.clone(),
        spec: NewTool {
            name: r.text(1, "name")?,
            description: r.text(2, "description")?,
            parameters: r.parse(3, "parameters", |s| serde_json::from_str(&s))?,
        },
        created_at: from_micros(r.int(4, "created_at")?),
        updated_at: from_micros(r.int(5, "updated_at")?),
    })
}

/// An agent row without its tools (filled in by [`with_tools`]).
fn agent_row(row: &Row, tenant: &TenantId) -> Result<AgentConfig, StoreError> {
    let r = RowReader::new(row, "config_agents");
    let opt = |idx, column| {
        r.opt_int(idx, column)?.map(u32::try_from).transpose().map_err(|e| corrupt("config_agents", column, e))
    };
    Ok(AgentConfig {
        id: AgentConfigId::from_uuid(r.uuid(0, "id")?),
        tenant: tenant.clone(),
        spec: NewAgent {
            name: r.parse(1, "name", AgentId::parse)?,
            model_id: ModelId::from_uuid(r.uuid(2, "model_id")?),
            system_prompt: r.text(3, "system_prompt")?,
            tool_ids: Vec::new(),
            memory: MemoryOptions {
                last_n: opt(4, "last_n")?,
                top_k: opt(5, "top_k")?,
                token_budget: opt(6, "token_budget")?,
            },
        },
        created_at: from_micros(r.int(7, "created_at")?),
        updated_at: from_micros(r.int(8, "updated_at")?),
    })
}

async fn with_tools(conn: &Connection, mut agents: Vec<AgentConfig>) -> Result<Vec<AgentConfig>, StoreError> {
    for a in &mut agents {
        let mut rows = conn
            .query(
                "SELECT tool_id FROM config_agent_tools WHERE agent_id = ?1 ORDER BY position",
                vec![uuid(a.id.as_uuid())],
            )
            .await
            .ctx("read agent tools")?;
        while let Some(row) = rows.next().await.ctx("read agent tools")? {
            a.spec.tool_ids.push(ToolId::from_uuid(RowReader::new(&row, "config_agent_tools").uuid(0, "tool_id")?));
        }
    }
    Ok(agents)
}

async fn exists(conn: &Connection, context: &'static str, sql: &str, params: Vec<Value>) -> Result<bool, StoreError> {
    Ok(query_row(conn, context, sql, params, |_| Ok(())).await?.is_some())
}

/// `Conflict` when another row of the tenant in `tbl` has `name`.
async fn name_free(
    conn: &Connection,
    tbl: &'static str,
    what: &str,
    tenant: &TenantId,
    name: &str,
    except: Option<uuid::Uuid>,
) -> Result<(), StoreError> {
    let sql = format!("SELECT 1 FROM {tbl} WHERE tenant = ?1 AND name = ?2 AND id IS NOT ?3");
    let params = vec![text(tenant.as_str()), text(name), except.map_or(Value::Null, uuid)];
    if exists(conn, "check name", &sql, params).await? {
        return Err(StoreError::Conflict(format!("a {what} named `{name}` already exists")));
    }
    Ok(())
}

/// `NotFound` unless the row exists for the tenant.
async fn must_exist(
    conn: &Connection,
    tbl: &'static str,
    what: &'static str,
    tenant: &TenantId,
    id: uuid::Uuid,
) -> Result<(), StoreError> {
    let sql = format!("SELECT 1 FROM {tbl} WHERE tenant = ?1 AND id = ?2");
    if exists(conn, "look up", &sql, vec![text(tenant.as_str()), uuid(id)]).await? {
        Ok(())
    } else {
        Err(StoreError::not_found(what, id))
    }
}

/// Clears the tenant's default flag on every model but `keep`.
async fn clear_default(conn: &Connection, tenant: &TenantId, keep: ModelId, at: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE config_models SET is_default = 0, updated_at = ?3 WHERE tenant = ?1 AND is_default = 1 AND id <> ?2",
        vec![text(tenant.as_str()), uuid(keep.as_uuid()), Value::Integer(at)],
    )
    .await
    .ctx("clear default model")?;
    Ok(())
}

fn model_params(new: &NewModel) -> Vec<Value> {
    vec![
        text(new.name.as_str()),
        text(new.provider.as_str()),
        Value::Integer(i64::from(new.context_window)),
        Value::Integer(i64::from(new.max_output_tokens)),
        Value::Real(new.input_price),
        Value::Real(new.output_price),
        Value::Integer(i64::from(new.is_default)),
    ]
}

/// Checks an agent's references inside the write transaction: `Invalid`
/// for a model or tool the tenant does not have.
async fn check_agent_refs(conn: &Connection, tenant: &TenantId, new: &NewAgent) -> Result<(), StoreError> {
    let model_sql = "SELECT 1 FROM config_models WHERE tenant = ?1 AND id = ?2";
    if !exists(conn, "check agent model", model_sql, vec![text(tenant.as_str()), uuid(new.model_id.as_uuid())]).await? {
        return Err(DomainError::new("model_id", format!("model {} does not exist", new.model_id)).into());
    }
    let tool_sql = "SELECT 1 FROM config_tools WHERE tenant = ?1 AND id = ?2";
    for t in &new.tool_ids {
        if !exists(conn, "check agent tools", tool_sql, vec![text(tenant.as_str()), uuid(t.as_uuid())]).await? {
            return Err(DomainError::new("tool_ids", format!("tool {t} does not exist")).into());
        }
    }
    Ok(())
}

async fn write_agent_tools(conn: &Connection, id: AgentConfigId, tools: &[ToolId]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM config_agent_tools WHERE agent_id = ?1", vec![uuid(id.as_uuid())])
        .await
        .ctx("write agent tools")?;
    for (i, t) in tools.iter().enumerate() {
        conn.execute(
            "INSERT INTO config_agent_tools (agent_id, position, tool_id) VALUES (?1, ?2, ?3)",
            vec![uuid(id.as_uuid()), Value::Integer(i64::try_from(i).unwrap_or(i64::MAX)), uuid(t.as_uuid())],
        )
        .await
        .ctx("write agent tools")?;
    }
    Ok(())
}

fn memory_params(m: &MemoryOptions) -> [Value; 3] {
    let v = |x: Option<u32>| x.map_or(Value::Null, |n| Value::Integer(i64::from(n)));
    [v(m.last_n), v(m.top_k), v(m.token_budget)]
}

impl LibsqlBackend {
    async fn list_rows<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
        decode: fn(&Row, &TenantId) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let (sql, params) = list_sql(tenant, query)?;
        let tenant = tenant.clone();
        self.read(move |conn| async move {
            let mut rows = conn.query(&sql, params).await.ctx("list configuration")?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().await.ctx("list configuration")? {
                items.push(decode(&row, &tenant)?);
            }
            Ok(items)
        })
        .await
    }
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

async fn get_agent_on(conn: &Connection, tenant: &TenantId, id: AgentConfigId) -> Result<AgentConfig, StoreError> {
    let found = query_row(
        conn,
        "get agent",
        &format!("SELECT {AGENT_COLUMNS} FROM config_agents WHERE tenant = ?1 AND id = ?2"),
        vec![text(tenant.as_str()), uuid(id.as_uuid())],
        |row| agent_row(row, tenant),
    )
    .await?
    .ok_or_else(|| StoreError::not_found("agent", id))?;
    Ok(with_tools(conn, vec![found]).await?.remove(0))
}

#[async_trait]
impl ConfigStore for LibsqlBackend {
    async fn create_model(&self, tenant: &TenantId, new: NewModel) -> Result<ModelConfig, StoreError> {
        new.validate()?;
        let at = now();
        let created =
            ModelConfig { id: ModelId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
        let stored = created.clone();
        self.write(move |conn| async move {
            let (t, spec) = (&stored.tenant, &stored.spec);
            name_free(&conn, "config_models", "model", t, &spec.name, None).await?;
            if spec.is_default {
                clear_default(&conn, t, stored.id, to_micros(at)).await?;
            }
            let mut params = vec![uuid(stored.id.as_uuid()), text(t.as_str())];
            params.extend(model_params(spec));
            params.push(Value::Integer(to_micros(at)));
            conn.execute(
                "INSERT INTO config_models (id, tenant, name, provider, context_window, max_output_tokens, \
                 input_price, output_price, is_default, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                params,
            )
            .await
            .ctx("create model")?;
            Ok(())
        })
        .await?;
        Ok(created)
    }

    async fn get_model(&self, tenant: &TenantId, id: ModelId) -> Result<ModelConfig, StoreError> {
        let tenant = tenant.clone();
        self.read(move |conn| async move {
            query_row(
                &conn,
                "get model",
                &format!("SELECT {MODEL_COLUMNS} FROM config_models WHERE tenant = ?1 AND id = ?2"),
                vec![text(tenant.as_str()), uuid(id.as_uuid())],
                |row| model_row(row, &tenant),
            )
            .await?
            .ok_or_else(|| StoreError::not_found("model", id))
        })
        .await
    }

    async fn list_models(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ModelConfig, ListCursor>, StoreError> {
        check_entity(query, ConfigEntity::Models)?;
        let items = self.list_rows(tenant, query, model_row).await?;
        page(tenant, query, items)
    }

    async fn update_model(&self, tenant: &TenantId, id: ModelId, new: NewModel) -> Result<ModelConfig, StoreError> {
        new.validate()?;
        let at = to_micros(now());
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            must_exist(&conn, "config_models", "model", &tenant, id.as_uuid()).await?;
            name_free(&conn, "config_models", "model", &tenant, &new.name, Some(id.as_uuid())).await?;
            if new.is_default {
                clear_default(&conn, &tenant, id, at).await?;
            }
            let mut params = vec![uuid(id.as_uuid()), text(tenant.as_str())];
            params.extend(model_params(&new));
            params.push(Value::Integer(at));
            query_row(
                &conn,
                "update model",
                &format!(
                    "UPDATE config_models SET name = ?3, provider = ?4, context_window = ?5, \
                     max_output_tokens = ?6, input_price = ?7, output_price = ?8, is_default = ?9, \
                     updated_at = ?10 WHERE tenant = ?2 AND id = ?1 RETURNING {MODEL_COLUMNS}"
                ),
                params,
                |row| model_row(row, &tenant),
            )
            .await?
            .ok_or_else(|| StoreError::not_found("model", id))
        })
        .await
    }

    async fn delete_model(&self, tenant: &TenantId, id: ModelId) -> Result<(), StoreError> {
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            must_exist(&conn, "config_models", "model", &tenant, id.as_uuid()).await?;
            let used = query_row(
                &conn,
                "delete model",
                "SELECT name FROM config_agents WHERE model_id = ?1 LIMIT 1",
                vec![uuid(id.as_uuid())],
                |row| RowReader::new(row, "config_agents").text(0, "name"),
            )
            .await?;
            if let Some(agent) = used {
                return Err(StoreError::Conflict(format!("model {id} is used by agent `{agent}`")));
            }
            conn.execute("DELETE FROM config_models WHERE id = ?1", vec![uuid(id.as_uuid())])
                .await
                .ctx("delete model")?;
            Ok(())
        })
        .await
    }

    async fn create_agent(&self, tenant: &TenantId, new: NewAgent) -> Result<AgentConfig, StoreError> {
        new.validate()?;
        let at = now();
        let created =
            AgentConfig { id: AgentConfigId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
        let stored = created.clone();
        self.write(move |conn| async move {
            let (t, spec) = (&stored.tenant, &stored.spec);
            check_agent_refs(&conn, t, spec).await?;
            name_free(&conn, "config_agents", "agent", t, spec.name.as_str(), None).await?;
            let mut params = vec![
                uuid(stored.id.as_uuid()),
                text(t.as_str()),
                text(spec.name.as_str()),
                uuid(spec.model_id.as_uuid()),
                text(spec.system_prompt.as_str()),
            ];
            params.extend(memory_params(&spec.memory));
            params.push(Value::Integer(to_micros(at)));
            conn.execute(
                "INSERT INTO config_agents (id, tenant, name, model_id, system_prompt, last_n, top_k, \
                 token_budget, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                params,
            )
            .await
            .ctx("create agent")?;
            write_agent_tools(&conn, stored.id, &spec.tool_ids).await
        })
        .await?;
        Ok(created)
    }

    async fn get_agent(&self, tenant: &TenantId, id: AgentConfigId) -> Result<AgentConfig, StoreError> {
        let tenant = tenant.clone();
        self.read(move |conn| async move { get_agent_on(&conn, &tenant, id).await }).await
    }

    async fn list_agents(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<AgentConfig, ListCursor>, StoreError> {
        check_entity(query, ConfigEntity::Agents)?;
        let (sql, params) = list_sql(tenant, query)?;
        let owner = tenant.clone();
        let items = self
            .read(move |conn| async move {
                let mut rows = conn.query(&sql, params).await.ctx("list agents")?;
                let mut items = Vec::new();
                while let Some(row) = rows.next().await.ctx("list agents")? {
                    items.push(agent_row(&row, &owner)?);
                }
                drop(rows);
                with_tools(&conn, items).await
            })
            .await?;
        page(tenant, query, items)
    }

    async fn update_agent(
        &self,
        tenant: &TenantId,
        id: AgentConfigId,
        new: NewAgent,
    ) -> Result<AgentConfig, StoreError> {
        new.validate()?;
        let at = to_micros(now());
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            must_exist(&conn, "config_agents", "agent", &tenant, id.as_uuid()).await?;
            check_agent_refs(&conn, &tenant, &new).await?;
            name_free(&conn, "config_agents", "agent", &tenant, new.name.as_str(), Some(id.as_uuid())).await?;
            let mut params = vec![
                uuid(id.as_uuid()),
                text(tenant.as_str()),
                text(new.name.as_str()),
                uuid(new.model_id.as_uuid()),
                text(new.system_prompt.as_str()),
            ];
            params.extend(memory_params(&new.memory));
            params.push(Value::Integer(at));
            conn.execute(
                "UPDATE config_agents SET name = ?3, model_id = ?4, system_prompt = ?5, last_n = ?6, top_k = ?7, \
                 token_budget = ?8, updated_at = ?9 WHERE tenant = ?2 AND id = ?1",
                params,
            )
            .await
            .ctx("update agent")?;
            write_agent_tools(&conn, id, &new.tool_ids).await?;
            get_agent_on(&conn, &tenant, id).await
        })
        .await
    }

    async fn delete_agent(&self, tenant: &TenantId, id: AgentConfigId) -> Result<(), StoreError> {
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            must_exist(&conn, "config_agents", "agent", &tenant, id.as_uuid()).await?;
            for sql in ["DELETE FROM config_agent_tools WHERE agent_id = ?1", "DELETE FROM config_agents WHERE id = ?1"]
            {
                conn.execute(sql, vec![uuid(id.as_uuid())]).await.ctx("delete agent")?;
            }
            Ok(())
        })
        .await
    }

    async fn agent_tools(&self, tenant: &TenantId, id: AgentConfigId) -> Result<Vec<ToolConfig>, StoreError> {
        let tenant = tenant.clone();
        self.read(move |conn| async move {
            must_exist(&conn, "config_agents", "agent", &tenant, id.as_uuid()).await?;
            let columns = TOOL_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
            let mut rows = conn
                .query(
                    &format!(
                        "SELECT {columns} FROM config_agent_tools a JOIN config_tools t ON t.id = a.tool_id \
                         WHERE a.agent_id = ?1 AND t.tenant = ?2 ORDER BY a.position"
                    ),
                    vec![uuid(id.as_uuid()), text(tenant.as_str())],
                )
                .await
                .ctx("agent tools")?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await.ctx("agent tools")? {
                out.push(tool_row(&row, &tenant)?);
            }
            Ok(out)
        })
        .await
    }

    async fn create_tool(&self, tenant: &TenantId, new: NewTool) -> Result<ToolConfig, StoreError> {
        new.validate()?;
        let at = now();
        let created =
            ToolConfig { id: ToolId::new(), tenant: tenant.clone(), spec: new, created_at: at, updated_at: at };
        let stored = created.clone();
        let parameters = json_text(&stored.spec.parameters)?;
        self.write(move |conn| async move {
            let (t, spec) = (&stored.tenant, &stored.spec);
            name_free(&conn, "config_tools", "tool", t, &spec.name, None).await?;
            conn.execute(
                "INSERT INTO config_tools (id, tenant, name, description, parameters, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                vec![
                    uuid(stored.id.as_uuid()),
                    text(t.as_str()),
                    text(spec.name.as_str()),
                    text(spec.description.as_str()),
                    parameters,
                    Value::Integer(to_micros(at)),
                ],
            )
            .await
            .ctx("create tool")?;
            Ok(())
        })
        .await?;
        Ok(created)
    }

    async fn get_tool(&self, tenant: &TenantId, id: ToolId) -> Result<ToolConfig, StoreError> {
        let tenant = tenant.clone();
        self.read(move |conn| async move {
            query_row(
                &conn,
                "get tool",
                &format!("SELECT {TOOL_COLUMNS} FROM config_tools WHERE tenant = ?1 AND id = ?2"),
                vec![text(tenant.as_str()), uuid(id.as_uuid())],
                |row| tool_row(row, &tenant),
            )
            .await?
            .ok_or_else(|| StoreError::not_found("tool", id))
        })
        .await
    }

    async fn list_tools(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Page<ToolConfig, ListCursor>, StoreError> {
        check_entity(query, ConfigEntity::Tools)?;
        let items = self.list_rows(tenant, query, tool_row).await?;
        page(tenant, query, items)
    }

    async fn update_tool(&self, tenant: &TenantId, id: ToolId, new: NewTool) -> Result<ToolConfig, StoreError> {
        new.validate()?;
        let at = to_micros(now());
        let parameters = json_text(&new.parameters)?;
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            must_exist(&conn, "config_tools", "tool", &tenant, id.as_uuid()).await?;
            name_free(&conn, "config_tools", "tool", &tenant, &new.name, Some(id.as_uuid())).await?;
            query_row(
                &conn,
                "update tool",
                &format!(
                    "UPDATE config_tools SET name = ?3, description = ?4, parameters = ?5, updated_at = ?6 \
                     WHERE tenant = ?2 AND id = ?1 RETURNING {TOOL_COLUMNS}"
                ),
                vec![
                    uuid(id.as_uuid()),
                    text(tenant.as_str()),
                    text(new.name.as_str()),
                    text(new.description.as_str()),
                    parameters,
                    Value::Integer(at),
                ],
                |row| tool_row(row, &tenant),
            )
            .await?
            .ok_or_else(|| StoreError::not_found("tool", id))
        })
        .await
    }

    async fn delete_tool(&self, tenant: &TenantId, id: ToolId) -> Result<(), StoreError> {
        let tenant = tenant.clone();
        self.write(move |conn| async move {
            must_exist(&conn, "config_tools", "tool", &tenant, id.as_uuid()).await?;
            let used = query_row(
                &conn,
                "delete tool",
                "SELECT g.name FROM config_agent_tools a JOIN config_agents g ON g.id = a.agent_id \
                 WHERE a.tool_id = ?1 LIMIT 1",
                vec![uuid(id.as_uuid())],
                |row| RowReader::new(row, "config_agents").text(0, "name"),
            )
            .await?;
            if let Some(agent) = used {
                return Err(StoreError::Conflict(format!("tool {id} is used by agent `{agent}`")));
            }
            conn.execute("DELETE FROM config_tools WHERE id = ?1", vec![uuid(id.as_uuid())])
                .await
                .ctx("delete tool")?;
            Ok(())
        })
        .await
    }

    async fn get_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<Option<Setting>, StoreError> {
        let (tenant, category, key) = (tenant.clone(), category.clone(), key.clone());
        self.read(move |conn| async move {
            query_row(
                &conn,
                "get setting",
                "SELECT value, updated_at FROM config_settings WHERE tenant = ?1 AND category = ?2 AND key = ?3",
                vec![text(tenant.as_str()), text(category.as_str()), text(key.as_str())],
                |row| {
                    let r = RowReader::new(row, "config_settings");
                    Ok(Setting {
                        tenant: tenant.clone(),
                        category: category.clone(),
                        key: key.clone(),
                        value: r.parse(0, "value", |s| serde_json::from_str(&s))?,
                        updated_at: from_micros(r.int(1, "updated_at")?),
                    })
                },
            )
            .await
        })
        .await
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
        let stored = json_text(&value)?;
        let params = vec![
            text(tenant.as_str()),
            text(category.as_str()),
            text(key.as_str()),
            stored,
            Value::Integer(to_micros(at)),
        ];
        self.write(move |conn| async move {
            conn.execute(
                "INSERT INTO config_settings (tenant, category, key, value, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (tenant, category, key) DO UPDATE SET value = excluded.value, \
                 updated_at = excluded.updated_at",
                params,
            )
            .await
            .ctx("put setting")?;
            Ok(())
        })
        .await?;
        Ok(Setting { tenant: tenant.clone(), category: category.clone(), key: key.clone(), value, updated_at: at })
    }

    async fn delete_setting(
        &self,
        tenant: &TenantId,
        category: &SettingName,
        key: &SettingName,
    ) -> Result<(), StoreError> {
        let params = vec![text(tenant.as_str()), text(category.as_str()), text(key.as_str())];
        let what = format!("{}/{}", category.as_str(), key.as_str());
        self.write(move |conn| async move {
            let n = conn
                .execute("DELETE FROM config_settings WHERE tenant = ?1 AND category = ?2 AND key = ?3", params)
                .await
                .ctx("delete setting")?;
            if n == 0 { Err(StoreError::not_found("setting", what)) } else { Ok(()) }
        })
        .await
    }
}

fn check_entity(query: &ListQuery, want: ConfigEntity) -> Result<(), StoreError> {
    if query.entity() == want {
        Ok(())
    } else {
        Err(DomainError::new("query", format!("lists {}, not {}", query.entity().as_str(), want.as_str())).into())
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
        assert!(params.iter().filter(|p| matches!(p, Value::Text(s) if s == evil)).count() == 3, "{params:?}");
        assert!(sql.ends_with("ORDER BY provider DESC, id DESC LIMIT ?6"), "{sql}");
    }
}
