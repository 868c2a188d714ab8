//! Exports and imports over HTTP, and the export file format both they and
//! the CLI (`memlayer export`, `memlayer import`) speak: JSON Lines, one
//! record per line, versioned (docs/EXPORT.md).
//!
//! - `GET /api/export` (`read` scope) streams the caller's memory as
//!   `application/x-ndjson`, never buffered whole: a task reads the store
//!   in keyset pages and sends chunks through a small channel, so a slow
//!   reader holds the export back instead of filling memory. A failure
//!   after the first byte aborts the body (the missing end record tells an
//!   import the file is incomplete).
//! - `POST /api/import` (`write` scope; catalog records need `admin`) reads
//!   its body as it arrives, line by line, and imports each thread when its
//!   block ends; an error answers 400/403/409 naming the line and field,
//!   with what was imported before it.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use memlayer_app::{
    ExportModel, ExportOptions, FORMAT_VERSION, Header, ImportError, ImportFailure, ImportReport, Importer, Record,
    RecordSink, Totals,
};
use memlayer_domain::{
    AgentConfig, AgentId, AgentName, AgentState, ContextOptions, Embedding, MemoryOptions, MessageId, Metadata,
    ModelConfig, ModelId, NewAgent, NewMessage, NewModel, NewTool, ResourceId, Role, RunnerSpec, Scope, Setting,
    SettingName, Summary, TenantId, Thread, ThreadId, Timestamp, Title, TokenCount, ToolCall, ToolConfig, ToolId,
    WorkingContent, WorkingMemory, WorkingMemoryOptions, WorkingScope,
};
use memlayer_ports::{StoreError, VectorEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Read, Write};
use crate::dto::whole;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Query;
use crate::state::AppState;

/// The media type of an export.
pub const NDJSON: &str = "application/x-ndjson";

/// The `format` of an export's header.
pub const FORMAT_NAME: &str = "memlayer-export";

/// The longest line an import reads (a message is at most about 1 MiB of
/// content and tool arguments; a vector of 4,096 floats about 80 KiB).
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Bytes gathered before an export sends a chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// Adds the export and import routes.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(export)).routes(routes!(import))
}

// ---------------------------------------------------------------------------
// The wire records.

type Ts = Timestamp;

/// The header's embedding model.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireModel {
    model: String,
    #[serde(deserialize_with = "whole")]
    dim: usize,
}

/// A catalog agent's memory options.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMemory {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::dto::whole_opt")]
    last_n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::dto::whole_opt")]
    top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::dto::whole_opt")]
    token_budget: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    working_memory: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
}

/// A message's token count.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTokens {
    #[serde(deserialize_with = "whole")]
    count: u32,
    model: String,
    encoding: String,
    exact: bool,
}

/// A working-memory document's scope.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireScope {
    kind: String,
    id: String,
}

macro_rules! wire_records {
    ($($(#[$doc:meta])* $variant:ident $tag:literal { $($(#[$fattr:meta])* $field:ident : $ty:ty),* $(,)? })*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Serialize, Deserialize)]
            #[serde(deny_unknown_fields)]
            #[allow(missing_docs, reason = "docs/EXPORT.md documents every field")]
            pub struct $variant {
                #[serde(rename = "type")]
                pub kind: String,
                $($(#[$fattr])* pub $field: $ty,)*
            }
        )*

        /// Decodes a line's object by its `type`.
        fn decode_typed(kind: &str, value: Value) -> Result<WireRecord, (String, String)> {
            match kind {
                $($tag => path_decode::<$variant>(value).map(WireRecord::$variant),)*
                other => Err(("type".into(), format!("unknown record type `{other}`"))),
            }
        }

        /// One decoded line.
        #[derive(Debug)]
        #[allow(missing_docs, reason = "one variant per record type")]
        pub enum WireRecord { $($variant($variant),)* }
    };
}

wire_records! {
    /// The first record.
    WireHeader "header" {
        format: String,
        #[serde(deserialize_with = "whole")] version: u32,
        memlayer_version: String,
        tenant: String,
        #[serde(with = "time::serde::rfc3339")] exported_at: Ts,
        embedding: WireModel,
        vectors: bool,
        #[serde(default)] resource_id: Option<String>,
        #[serde(default)] thread_id: Option<String>,
    }
    /// A catalog model.
    WireModelRecord "model" {
        id: String,
        tenant: String,
        name: String,
        provider: String,
        #[serde(deserialize_with = "whole")] context_window: u32,
        #[serde(deserialize_with = "whole")] max_output_tokens: u32,
        input_price: f64,
        output_price: f64,
        is_default: bool,
        #[serde(with = "time::serde::rfc3339")] created_at: Ts,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A catalog tool.
    WireTool "tool" {
        id: String,
        tenant: String,
        name: String,
        description: String,
        parameters: Value,
        #[serde(with = "time::serde::rfc3339")] created_at: Ts,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A catalog agent.
    WireAgent "agent" {
        id: String,
        tenant: String,
        name: String,
        model_id: String,
        system_prompt: String,
        tool_ids: Vec<String>,
        memory: WireMemory,
        #[serde(default, skip_serializing_if = "Option::is_none")] runner: Option<Value>,
        #[serde(with = "time::serde::rfc3339")] created_at: Ts,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A catalog setting.
    WireSetting "setting" {
        tenant: String,
        category: String,
        key: String,
        value: Value,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A working-memory version.
    WireWorking "working_memory" {
        scope: WireScope,
        format: String,
        content: Value,
        #[serde(deserialize_with = "whole")] version: u64,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A thread.
    WireThread "thread" {
        id: String,
        tenant: String,
        resource_id: Option<String>,
        agent_id: Option<String>,
        title: Option<String>,
        model: Option<String>,
        metadata: Value,
        #[serde(deserialize_with = "whole")] last_seq: i64,
        #[serde(with = "time::serde::rfc3339")] created_at: Ts,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A message.
    WireMessage "message" {
        id: String,
        thread_id: String,
        #[serde(deserialize_with = "whole")] seq: i64,
        role: String,
        content: String,
        #[serde(default)] tool_call_id: Option<String>,
        #[serde(default)] tool_name: Option<String>,
        #[serde(default)] tool_calls: Vec<ToolCall>,
        metadata: Value,
        #[serde(default)] token_count: Option<WireTokens>,
        #[serde(with = "time::serde::rfc3339")] created_at: Ts,
    }
    /// A stored vector.
    WireVector "vector" {
        message_id: String,
        thread_id: String,
        model: String,
        #[serde(deserialize_with = "whole")] dim: usize,
        vector: Vec<f32>,
    }
    /// An agent state.
    WireState "agent_state" {
        thread_id: String,
        agent_id: String,
        state: Value,
        #[serde(deserialize_with = "whole")] version: u64,
        #[serde(with = "time::serde::rfc3339")] updated_at: Ts,
    }
    /// A summary version.
    WireSummary "summary" {
        thread_id: String,
        #[serde(deserialize_with = "whole")] version: u64,
        text: String,
        #[serde(deserialize_with = "whole")] covers_through: i64,
        #[serde(deserialize_with = "whole")] covered_messages: u64,
        summarizer: String,
        #[serde(with = "time::serde::rfc3339")] created_at: Ts,
    }
    /// The last record.
    WireEnd "end" {
        #[serde(deserialize_with = "whole")] records: u64,
        #[serde(deserialize_with = "whole")] threads: u64,
        #[serde(deserialize_with = "whole")] messages: u64,
        #[serde(deserialize_with = "whole")] vectors: u64,
    }
}

/// Deserializes `value` as `T`, naming the field path of an error.
fn path_decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { field_of(&e.inner().to_string()) } else { path };
        (field, e.into_inner().to_string())
    })
}

/// The field a serde message names (`missing field `seq``), else `record`.
fn field_of(message: &str) -> String {
    message.split('`').nth(1).map_or_else(|| "record".to_owned(), str::to_owned)
}

fn tag(kind: &str) -> String {
    kind.to_owned()
}

fn id_of(uuid: &impl ToString) -> String {
    uuid.to_string()
}

/// A record as one line of JSON (without the newline).
///
/// # Errors
/// Serialisation failed (a value JSON cannot hold).
pub fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match record {
        Record::Header(h) => serde_json::to_writer(
            out,
            &WireHeader {
                kind: tag("header"),
                format: FORMAT_NAME.into(),
                version: h.version,
                memlayer_version: h.memlayer_version.clone(),
                tenant: h.tenant.as_str().into(),
                exported_at: h.exported_at,
                embedding: WireModel { model: h.embedding.model.clone(), dim: h.embedding.dim },
                vectors: h.vectors,
                resource_id: h.resource_id.as_ref().map(|r| r.as_str().to_owned()),
                thread_id: h.thread_id.as_ref().map(id_of),
            },
        ),
        Record::Model(m) => serde_json::to_writer(
            out,
            &WireModelRecord {
                kind: tag("model"),
                id: id_of(&m.id),
                tenant: m.tenant.as_str().into(),
                name: m.spec.name.clone(),
                provider: m.spec.provider.clone(),
                context_window: m.spec.context_window,
                max_output_tokens: m.spec.max_output_tokens,
                input_price: m.spec.input_price,
                output_price: m.spec.output_price,
                is_default: m.spec.is_default,
                created_at: m.created_at,
                updated_at: m.updated_at,
            },
        ),
        Record::Tool(t) => serde_json::to_writer(
            out,
            &WireTool {
                kind: tag("tool"),
                id: id_of(&t.id),
                tenant: t.tenant.as_str().into(),
                name: t.spec.name.clone(),
                description: t.spec.description.clone(),
                parameters: t.spec.parameters.clone(),
                created_at: t.created_at,
                updated_at: t.updated_at,
            },
        ),
        Record::Agent(a) => {
            let m = &a.spec.memory;
            serde_json::to_writer(
                out,
                &WireAgent {
                    kind: tag("agent"),
                    id: id_of(&a.id),
                    tenant: a.tenant.as_str().into(),
                    name: a.spec.name.as_str().into(),
                    model_id: id_of(&a.spec.model_id),
                    system_prompt: a.spec.system_prompt.clone(),
                    tool_ids: a.spec.tool_ids.iter().map(id_of).collect(),
                    memory: WireMemory {
                        last_n: m.last_n,
                        top_k: m.top_k,
                        token_budget: m.token_budget,
                        working_memory: m.working_memory.as_ref().map(WorkingMemoryOptions::to_value),
                        context: m.context.as_ref().map(ContextOptions::to_value),
                    },
                    runner: a.spec.runner.as_ref().and_then(|r| serde_json::to_value(r).ok()),
                    created_at: a.created_at,
                    updated_at: a.updated_at,
                },
            )
        }
        Record::Setting(s) => serde_json::to_writer(
            out,
            &WireSetting {
                kind: tag("setting"),
                tenant: s.tenant.as_str().into(),
                category: s.category.as_str().into(),
                key: s.key.as_str().into(),
                value: s.value.clone(),
                updated_at: s.updated_at,
            },
        ),
        Record::Working(w) => {
            let (format, content) = match &w.content {
                WorkingContent::Json(v) => ("json", v.clone()),
                WorkingContent::Markdown(s) => ("markdown", Value::String(s.clone())),
            };
            serde_json::to_writer(
                out,
                &WireWorking {
                    kind: tag("working_memory"),
                    scope: WireScope { kind: w.scope.kind().as_str().into(), id: w.scope.id_text() },
                    format: format.into(),
                    content,
                    version: w.version,
                    updated_at: w.updated_at,
                },
            )
        }
        Record::Thread(t) => serde_json::to_writer(
            out,
            &WireThread {
                kind: tag("thread"),
                id: id_of(&t.id),
                tenant: t.tenant.as_str().into(),
                resource_id: t.resource_id.as_ref().map(|r| r.as_str().to_owned()),
                agent_id: t.agent_id.as_ref().map(|a| a.as_str().to_owned()),
                title: t.title.as_ref().map(|x| x.as_str().to_owned()),
                model: t.model.clone(),
                metadata: Value::Object(t.metadata.as_map().clone()),
                last_seq: t.last_seq,
                created_at: t.created_at,
                updated_at: t.updated_at,
            },
        ),
        Record::Message(m) => serde_json::to_writer(
            out,
            &WireMessage {
                kind: tag("message"),
                id: id_of(&m.id),
                thread_id: id_of(&m.thread_id),
                seq: m.seq,
                role: m.role.as_str().into(),
                content: m.content.clone(),
                tool_call_id: m.tool_call_id.clone(),
                tool_name: m.tool_name.clone(),
                tool_calls: m.tool_calls.clone(),
                metadata: Value::Object(m.metadata.as_map().clone()),
                token_count: m.token_count.as_ref().map(|t| WireTokens {
                    count: t.count,
                    model: t.model.clone(),
                    encoding: t.encoding.clone(),
                    exact: t.exact,
                }),
                created_at: m.created_at,
            },
        ),
        Record::Vector(v) => serde_json::to_writer(
            out,
            &WireVector {
                kind: tag("vector"),
                message_id: id_of(&v.id),
                thread_id: id_of(&v.thread),
                model: v.embedding.model().to_owned(),
                dim: v.embedding.dim(),
                vector: v.embedding.vector().to_vec(),
            },
        ),
        Record::State(s) => serde_json::to_writer(
            out,
            &WireState {
                kind: tag("agent_state"),
                thread_id: id_of(&s.thread_id),
                agent_id: s.agent_id.as_str().into(),
                state: s.state.clone(),
                version: s.version,
                updated_at: s.updated_at,
            },
        ),
        Record::Summary(s) => serde_json::to_writer(
            out,
            &WireSummary {
                kind: tag("summary"),
                thread_id: id_of(&s.thread_id),
                version: s.version,
                text: s.text.clone(),
                covers_through: s.covers_through,
                covered_messages: s.covered_messages,
                summarizer: s.summarizer.clone(),
                created_at: s.created_at,
            },
        ),
        Record::End(t) => serde_json::to_writer(
            out,
            &WireEnd {
                kind: tag("end"),
                records: t.records,
                threads: t.threads,
                messages: t.messages,
                vectors: t.vectors,
            },
        ),
    }
}

/// A field's error: the field and what is wrong.
type FieldError = (String, String);

fn bad(field: &str, e: impl std::fmt::Display) -> FieldError {
    (field.to_owned(), e.to_string())
}

fn uuid_field(field: &str, s: &str) -> Result<uuid::Uuid, FieldError> {
    s.parse::<uuid::Uuid>().map_err(|e| bad(field, format!("not a UUID: {e}")))
}

fn domain(e: memlayer_domain::DomainError) -> FieldError {
    (e.field.to_owned(), e.reason)
}

/// Turns one line into a record: the JSON, its `type`, every field.
/// `tenant` is the importing tenant (vectors carry none of their own).
///
/// # Errors
/// The field (`json` for malformed JSON, `type`, or the field's path) and
/// what is wrong with it.
pub fn decode(line: &[u8], tenant: &TenantId) -> Result<Record, FieldError> {
    let mut value: Value = serde_json::from_slice(line).map_err(|e| bad("json", format!("malformed JSON: {e}")))?;
    let kind = match value.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("type", "must be a string")),
        None => return Err(bad("type", "missing: every record names its type")),
    };
    if !value.is_object() {
        return Err(bad("json", "a record is a JSON object"));
    }
    if let Some(o) = value.as_object_mut()
        && kind == "header"
    {
        // A future version may add fields: check the version before them.
        if let Some(v) = o.get("version").and_then(Value::as_u64)
            && v > u64::from(FORMAT_VERSION)
        {
            return Ok(Record::Header(future_header(v)));
        }
    }
    match decode_typed(&kind, value)? {
        WireRecord::WireHeader(h) => {
            if h.format != FORMAT_NAME {
                return Err(bad("format", format!("`{}` is not `{FORMAT_NAME}`", h.format)));
            }
            Ok(Record::Header(Header {
                version: h.version,
                memlayer_version: h.memlayer_version,
                tenant: TenantId::parse(h.tenant).map_err(|e| bad("tenant", e.reason))?,
                exported_at: h.exported_at,
                embedding: ExportModel { model: h.embedding.model, dim: h.embedding.dim },
                vectors: h.vectors,
                resource_id: h.resource_id.map(ResourceId::parse).transpose().map_err(domain)?,
                thread_id: h.thread_id.map(|t| uuid_field("thread_id", &t).map(ThreadId::from_uuid)).transpose()?,
            }))
        }
        WireRecord::WireModelRecord(m) => Ok(Record::Model(ModelConfig {
            id: ModelId::from_uuid(uuid_field("id", &m.id)?),
            tenant: TenantId::parse(m.tenant).map_err(|e| bad("tenant", e.reason))?,
            spec: NewModel {
                name: m.name,
                provider: m.provider,
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                input_price: m.input_price,
                output_price: m.output_price,
                is_default: m.is_default,
            },
            created_at: m.created_at,
            updated_at: m.updated_at,
        })),
        WireRecord::WireTool(t) => Ok(Record::Tool(ToolConfig {
            id: ToolId::from_uuid(uuid_field("id", &t.id)?),
            tenant: TenantId::parse(t.tenant).map_err(|e| bad("tenant", e.reason))?,
            spec: NewTool { name: t.name, description: t.description, parameters: t.parameters },
            created_at: t.created_at,
            updated_at: t.updated_at,
        })),
        WireRecord::WireAgent(a) => {
            let m = a.memory;
            Ok(Record::Agent(AgentConfig {
                id: AgentId::from_uuid(uuid_field("id", &a.id)?),
                tenant: TenantId::parse(a.tenant).map_err(|e| bad("tenant", e.reason))?,
                spec: NewAgent {
                    name: AgentName::parse(a.name).map_err(domain)?,
                    model_id: ModelId::from_uuid(uuid_field("model_id", &a.model_id)?),
                    system_prompt: a.system_prompt,
                    tool_ids: a
                        .tool_ids
                        .iter()
                        .map(|t| uuid_field("tool_ids", t).map(ToolId::from_uuid))
                        .collect::<Result<_, _>>()?,
                    memory: MemoryOptions {
                        last_n: m.last_n,
                        top_k: m.top_k,
                        token_budget: m.token_budget,
                        working_memory: m
                            .working_memory
                            .as_ref()
                            .map(WorkingMemoryOptions::from_value)
                            .transpose()
                            .map_err(|e| bad("memory.working_memory", e))?,
                        context: m
                            .context
                            .as_ref()
                            .map(ContextOptions::from_value)
                            .transpose()
                            .map_err(|e| bad("memory.context", e))?,
                    },
                    runner: a
                        .runner
                        .map(|r| RunnerSpec::from_value("runner", r))
                        .transpose()
                        .map_err(|e| bad("runner", e.reason))?,
                },
                created_at: a.created_at,
                updated_at: a.updated_at,
            }))
        }
        WireRecord::WireSetting(s) => Ok(Record::Setting(Setting {
            tenant: TenantId::parse(s.tenant).map_err(|e| bad("tenant", e.reason))?,
            category: SettingName::category(s.category).map_err(domain)?,
            key: SettingName::key(s.key).map_err(domain)?,
            value: s.value,
            updated_at: s.updated_at,
        })),
        WireRecord::WireWorking(w) => {
            let scope = match w.scope.kind.as_str() {
                "resource" => {
                    WorkingScope::Resource(ResourceId::parse(w.scope.id).map_err(|e| bad("scope.id", e.reason))?)
                }
                "thread" => WorkingScope::Thread(ThreadId::from_uuid(uuid_field("scope.id", &w.scope.id)?)),
                other => return Err(bad("scope.kind", format!("`{other}` is neither resource nor thread"))),
            };
            let content = match (w.format.as_str(), w.content) {
                ("json", v) => WorkingContent::Json(v),
                ("markdown", Value::String(s)) => WorkingContent::Markdown(s),
                ("markdown", _) => return Err(bad("content", "a markdown document is a string")),
                (other, _) => return Err(bad("format", format!("`{other}` is neither json nor markdown"))),
            };
            content.validate().map_err(domain)?;
            Ok(Record::Working(WorkingMemory { scope, content, version: w.version, updated_at: w.updated_at }))
        }
        WireRecord::WireThread(t) => Ok(Record::Thread(Thread {
            id: ThreadId::from_uuid(uuid_field("id", &t.id)?),
            tenant: TenantId::parse(t.tenant).map_err(|e| bad("tenant", e.reason))?,
            resource_id: t.resource_id.map(ResourceId::parse).transpose().map_err(domain)?,
            agent_id: t.agent_id.map(AgentName::parse).transpose().map_err(domain)?,
            title: t.title.map(Title::parse).transpose().map_err(domain)?,
            model: t.model.as_deref().map(memlayer_domain::parse_model).transpose().map_err(domain)?,
            metadata: Metadata::from_value(t.metadata).map_err(domain)?,
            last_seq: t.last_seq,
            created_at: t.created_at,
            updated_at: t.updated_at,
        })),
        WireRecord::WireMessage(m) => {
            let role: Role = m.role.parse().map_err(domain)?;
            let metadata = Metadata::from_value(m.metadata).map_err(domain)?;
            let mut new = NewMessage::new(role, m.content, m.tool_call_id, m.tool_name, m.tool_calls, metadata)
                .map_err(domain)?;
            if let Some(t) = m.token_count {
                new = new.with_token_count(TokenCount {
                    count: t.count,
                    model: t.model,
                    encoding: t.encoding,
                    exact: t.exact,
                });
            }
            if m.seq < 1 {
                return Err(bad("seq", "must be at least 1"));
            }
            let id = MessageId::from_uuid(uuid_field("id", &m.id)?);
            let thread = ThreadId::from_uuid(uuid_field("thread_id", &m.thread_id)?);
            Ok(Record::Message(new.into_message(id, thread, m.seq, m.created_at)))
        }
        WireRecord::WireVector(v) => Ok(Record::Vector(VectorEntry {
            id: MessageId::from_uuid(uuid_field("message_id", &v.message_id)?),
            tenant: tenant.clone(),
            thread: ThreadId::from_uuid(uuid_field("thread_id", &v.thread_id)?),
            embedding: Embedding::new(v.model, v.vector, v.dim).map_err(|e| bad("vector", e.reason))?,
        })),
        WireRecord::WireState(s) => {
            AgentState::validate(&s.state).map_err(domain)?;
            Ok(Record::State(AgentState {
                thread_id: ThreadId::from_uuid(uuid_field("thread_id", &s.thread_id)?),
                agent_id: AgentName::parse(s.agent_id).map_err(|e| bad("agent_id", e.reason))?,
                state: s.state,
                version: s.version,
                updated_at: s.updated_at,
            }))
        }
        WireRecord::WireSummary(s) => {
            if s.text.len() > Summary::MAX_BYTES {
                return Err(bad("text", format!("more than {} bytes", Summary::MAX_BYTES)));
            }
            Ok(Record::Summary(Summary {
                thread_id: ThreadId::from_uuid(uuid_field("thread_id", &s.thread_id)?),
                version: s.version,
                text: s.text,
                covers_through: s.covers_through,
                covered_messages: s.covered_messages,
                summarizer: s.summarizer,
                created_at: s.created_at,
            }))
        }
        WireRecord::WireEnd(e) => {
            Ok(Record::End(Totals { records: e.records, threads: e.threads, messages: e.messages, vectors: e.vectors }))
        }
    }
}

/// A header of a format version newer than this memlayer reads: only the
/// version matters, the importer refuses it naming the line.
fn future_header(version: u64) -> Header {
    Header {
        version: u32::try_from(version).unwrap_or(u32::MAX),
        memlayer_version: String::new(),
        tenant: TenantId::default_tenant(),
        exported_at: memlayer_domain::now(),
        embedding: ExportModel { model: String::new(), dim: 0 },
        vectors: false,
        resource_id: None,
        thread_id: None,
    }
}

// ---------------------------------------------------------------------------
// Driving an import from a byte stream (HTTP body or file).

/// Feeds the lines of `chunks` to `importer`: each line decoded and
/// pushed with its number, a last line without a newline refused as
/// truncated, a line over [`MAX_LINE_BYTES`] refused. `progress` hears the
/// bytes read so far after each chunk.
///
/// # Errors
/// The first [`ImportError`]; the thread whose block it falls in is not
/// imported.
pub async fn import_stream<S, E>(
    mut importer: Importer,
    tenant: &TenantId,
    mut chunks: S,
    mut progress: impl FnMut(u64, &ImportReport),
) -> Result<ImportReport, ImportError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut line = 0u64;
    let mut read = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            let mut err = ImportError::invalid(line + 1, "body", format!("reading the input failed: {e}"));
            err.report = Box::new(importer.report());
            err
        })?;
        read += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            line += 1;
            let text = std::mem::take(&mut buf);
            push_line(&mut importer, tenant, line, &text).await?;
        }
        buf.extend_from_slice(rest);
        if buf.len() > MAX_LINE_BYTES {
            let mut err = ImportError::invalid(line + 1, "json", format!("a line longer than {MAX_LINE_BYTES} bytes"));
            err.report = Box::new(importer.report());
            return Err(err);
        }
        progress(read, &importer.report());
    }
    if !buf.iter().all(u8::is_ascii_whitespace) {
        let mut err = ImportError::invalid(
            line + 1,
            "json",
            "truncated: the last line does not end with a newline (the file was cut short); the thread it belongs to \
             was not imported",
        );
        err.report = Box::new(importer.report());
        return Err(err);
    }
    let report = importer.finish().await?;
    progress(read, &report);
    Ok(report)
}

async fn push_line(importer: &mut Importer, tenant: &TenantId, line: u64, text: &[u8]) -> Result<(), ImportError> {
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match decode(text, tenant) {
        Ok(record) => importer.push(line, record).await,
        Err((field, message)) => {
            let mut err = ImportError::invalid(line, field, message);
            err.report = Box::new(importer.report());
            Err(err)
        }
    }
}

// ---------------------------------------------------------------------------
// Routes.

/// Query of `GET /api/export`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Only this resource's threads and working memory (no catalog).
    pub resource_id: Option<String>,
    /// Only this thread (no catalog, no resource working memory).
    pub thread_id: Option<String>,
    /// Include every stored vector (default false: an import re-embeds).
    pub vectors: Option<bool>,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReportDto {
    /// Threads stored with their contents.
    pub threads_created: u64,
    /// Threads already stored alike (nothing changed).
    pub threads_unchanged: u64,
    /// Messages stored.
    pub messages_created: u64,
    /// Vectors stored as given (the store's model).
    pub vectors_stored: u64,
    /// Imported messages queued for embedding (no vector of the store's model in the file).
    pub embeddings_queued: u64,
    /// Catalog records and resource working-memory documents stored.
    pub records_created: u64,
    /// Catalog records and resource working-memory documents already stored alike.
    pub records_unchanged: u64,
}

impl From<ImportReport> for ImportReportDto {
    fn from(r: ImportReport) -> Self {
        Self {
            threads_created: r.threads_created,
            threads_unchanged: r.threads_unchanged,
            messages_created: r.messages_created,
            vectors_stored: r.vectors_stored,
            embeddings_queued: r.embeddings_queued,
            records_created: r.records_created,
            records_unchanged: r.records_unchanged,
        }
    }
}

/// An [`ImportError`] as a response: 400 `invalid_import`, 409
/// `import_conflict`, 403 `forbidden`, or the store's own error, each with
/// the line, the field and what was imported before it.
pub fn import_error(e: ImportError) -> ApiError {
    let message = format!("line {}: {}: {}", e.line, e.field, e.message);
    let base = match e.failure {
        ImportFailure::Invalid => ApiError::new(StatusCode::BAD_REQUEST, "invalid_import", message),
        ImportFailure::Conflict => ApiError::new(StatusCode::CONFLICT, "import_conflict", message),
        ImportFailure::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        ImportFailure::Store(s) => {
            let mut api = ApiError::from(*s);
            api.prefix_message(&format!("line {}: ", e.line));
            api
        }
    };
    base.with_import(e.line, e.field, serde_json::to_value(ImportReportDto::from(*e.report)).unwrap_or(Value::Null))
}

/// Export the caller's memory as JSON Lines (docs/EXPORT.md): its whole
/// tenant by default (with the catalog), or one resource's or one
/// thread's; a caller bound to a resource gets only that resource's.
/// Streamed: the body is written as the store is read.
#[utoipa::path(get, path = "/api/export", security(("bearer" = ["read"])), tag = "transfer",
    params(ExportQuery, ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    responses((status = 200, content_type = "application/x-ndjson", body = String,
               description = "One JSON record per line: header, catalog, working memory, threads with their \
                 messages, vectors, agent states, summaries and working memory, end"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn export(
    State(s): State<AppState>,
    Read(who): Read,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let options = ExportOptions {
        resource: q.resource_id.map(ResourceId::parse).transpose()?,
        thread: q
            .thread_id
            .map(|t| t.parse::<ThreadId>().map_err(|e| ApiError::invalid(format!("thread_id: {e}"))))
            .transpose()?,
        vectors: q.vectors.unwrap_or(false),
    };
    if let Some(id) = options.thread {
        // Before the first byte: a thread the export cannot hold (missing,
        // or not of the resource named) is a 404, not a cut body.
        let thread = s.memory.get_thread(&who, id).await?;
        if options.resource.as_ref().is_some_and(|r| thread.resource_id.as_ref() != Some(r)) {
            return Err(ApiError::not_found(format!(
                "thread {id} is not of resource `{}`",
                options.resource.as_ref().map_or("", |r| r.as_str())
            )));
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let transfer = s.transfer.clone();
    tokio::spawn(async move {
        let mut sink = ChannelSink { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_BYTES * 2) };
        let done = transfer.export(&who, &options, &mut sink).await;
        let done = match done {
            Ok(_) => sink.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "export failed after it started: the body is cut short");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(resp)
}

/// An export's records as chunks of lines on a channel.
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelSink {
    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES * 2)));
        self.tx.send(Ok(chunk)).await.map_err(|_| StoreError::Unavailable("the client went away".into()))
    }
}

#[async_trait::async_trait]
impl RecordSink for ChannelSink {
    async fn put(&mut self, record: Record) -> Result<(), StoreError> {
        encode(&record, &mut self.buf).map_err(StoreError::backend)?;
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Import an export (docs/EXPORT.md), read as it arrives: each thread with
/// its messages, states, summaries and working memory in one transaction,
/// ids kept; importing a file twice changes nothing. Messages without a
/// vector of this server's model are embedded anew. Catalog records need
/// the `admin` scope and a credential of the whole tenant. An error names
/// the line and field; threads before it are imported, the one it falls in
/// is not.
#[utoipa::path(post, path = "/api/import", security(("bearer" = ["write"])), tag = "transfer",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body(content = String, content_type = "application/x-ndjson", description = "An export"),
    responses((status = 200, body = ImportReportDto),
              (status = 400, body = ErrorBody, description = "`invalid_import`: a malformed or truncated line, an \
                unknown or future format version, a record of another tenant, records out of place; with `line`, \
                `field` and `imported`"),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "`import_conflict`: \
                an id is stored with other content; nothing of that thread is imported")))]
async fn import(
    State(s): State<AppState>,
    Write(who): Write,
    body: Body,
) -> Result<axum::Json<ImportReportDto>, ApiError> {
    let tenant = who.tenant.clone();
    let catalog = who.may(Scope::Admin);
    let importer = s.transfer.importer(std::sync::Arc::new(who)).with_catalog(catalog);
    let report = import_stream(importer, &tenant, body.into_data_stream(), |_, _| {}).await.map_err(import_error)?;
    Ok(axum::Json(report.into()))
}
