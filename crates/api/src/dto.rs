//! JSON wire shapes of the HTTP API and their conversions to and from domain
//! types. Domain types are not the wire format: changing one must not
//! silently change the other.

use memlayer_domain::{
    AgentConfig, AgentId, AgentState, DomainError, MemoryOptions, Message, Metadata, ModelConfig, ModelId, NewAgent,
    NewMessage, NewModel, NewThread, NewTool, ResourceId, Role, Setting, Thread, ThreadPatch, Title, TokenCount,
    ToolCall, ToolConfig, ToolId,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A list page: `{"items": [...], "next_cursor": "…" | null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageDto<T> {
    /// Items in order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

impl<T, D: From<T>, C: std::fmt::Display> From<memlayer_domain::Page<T, C>> for PageDto<D> {
    fn from(page: memlayer_domain::Page<T, C>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        }
    }
}

/// A thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadDto {
    /// Time-ordered UUID.
    pub id: String,
    /// Owner tenant.
    pub tenant: String,
    /// The user or entity owning the thread.
    pub resource_id: Option<String>,
    /// The agent of the thread.
    pub agent_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Model whose tokenizer counts the thread's messages.
    pub model: Option<String>,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Messages appended so far (the last sequence number).
    pub message_count: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; moves on every change and append.
    pub updated_at: String,
}

impl From<Thread> for ThreadDto {
    fn from(t: Thread) -> Self {
        Self {
            id: t.id.to_string(),
            tenant: t.tenant.to_string(),
            resource_id: t.resource_id.map(|r| r.to_string()),
            agent_id: t.agent_id.map(|a| a.to_string()),
            title: t.title.map(|x| x.as_str().to_owned()),
            model: t.model,
            metadata: Value::Object(t.metadata.into_map()),
            message_count: t.last_seq,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// Body of `POST /api/threads`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateThreadDto {
    /// The user or entity owning the thread.
    pub resource_id: Option<String>,
    /// The agent of the thread.
    pub agent_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Model whose tokenizer counts the thread's messages (`gpt-4o`…).
    pub model: Option<String>,
    /// JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl TryFrom<CreateThreadDto> for NewThread {
    type Error = DomainError;
    fn try_from(d: CreateThreadDto) -> Result<Self, DomainError> {
        Ok(Self {
            resource_id: d.resource_id.map(ResourceId::parse).transpose()?,
            agent_id: d.agent_id.map(AgentId::parse).transpose()?,
            title: d.title.map(Title::parse).transpose()?,
            model: d.model.as_deref().map(memlayer_domain::parse_model).transpose()?,
            metadata: d.metadata.map(Metadata::from_value).transpose()?.unwrap_or_default(),
        })
    }
}

/// Body of `PATCH /api/threads/{id}`: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchThreadDto {
    /// New title or `null`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    /// New resource or `null`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub resource_id: Option<Option<String>>,
    /// New agent or `null`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub agent_id: Option<Option<String>>,
    /// New model or `null`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub model: Option<Option<String>>,
    /// Replaces the whole metadata object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl TryFrom<PatchThreadDto> for ThreadPatch {
    type Error = DomainError;
    fn try_from(d: PatchThreadDto) -> Result<Self, DomainError> {
        Ok(Self {
            title: d.title.map(|t| t.map(Title::parse).transpose()).transpose()?,
            resource_id: d.resource_id.map(|r| r.map(ResourceId::parse).transpose()).transpose()?,
            agent_id: d.agent_id.map(|a| a.map(AgentId::parse).transpose()).transpose()?,
            model: d.model.map(|m| m.as_deref().map(memlayer_domain::parse_model).transpose()).transpose()?,
            metadata: match d.metadata {
                None => None,
                Some(Value::Null) => Some(Metadata::default()),
                Some(v) => Some(Metadata::from_value(v)?),
            },
        })
    }
}

/// A tool call requested by an assistant message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallDto {
    /// Call id, answered by a later tool message's `tool_call_id`.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments (any JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Value,
}

/// A message to append.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageDto {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text; may be empty only for an assistant message with tool calls.
    #[serde(default)]
    pub content: String,
    /// Required for (and only allowed on) `tool` messages.
    pub tool_call_id: Option<String>,
    /// The tool's name, for tool messages.
    pub tool_name: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallDto>,
    /// JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl TryFrom<NewMessageDto> for NewMessage {
    type Error = DomainError;
    fn try_from(d: NewMessageDto) -> Result<Self, DomainError> {
        let role: Role = d.role.parse()?;
        let calls =
            d.tool_calls.into_iter().map(|c| ToolCall { id: c.id, name: c.name, arguments: c.arguments }).collect();
        let metadata = d.metadata.map(Metadata::from_value).transpose()?.unwrap_or_default();
        Self::new(role, d.content, d.tool_call_id, d.tool_name, calls, metadata)
    }
}

/// Body of `POST /api/threads/{id}/messages` in its batch form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBatchDto {
    /// 1 to 1000 messages, appended atomically in order.
    pub messages: Vec<NewMessageDto>,
}

/// Either one message or `{"messages": [...]}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documentation-only type for the OpenAPI schema")]
pub enum AppendBody {
    /// One message.
    One(NewMessageDto),
    /// A batch.
    Batch(MessageBatchDto),
}

/// A token count and how it was obtained.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCountDto {
    /// Tokens.
    pub count: u32,
    /// Model asked about.
    pub model: String,
    /// Encoding (`o200k_base`, `cl100k_base`) or `estimate:chars/4`.
    pub encoding: String,
    /// `false` for estimates.
    pub exact: bool,
}

impl From<TokenCount> for TokenCountDto {
    fn from(c: TokenCount) -> Self {
        Self { count: c.count, model: c.model, encoding: c.encoding, exact: c.exact }
    }
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDto {
    /// Time-ordered UUID.
    pub id: String,
    /// Its thread.
    pub thread_id: String,
    /// Position in the thread, from 1, without gaps.
    pub seq: i64,
    /// Author role.
    pub role: String,
    /// Text.
    pub content: String,
    /// For tool messages.
    pub tool_call_id: Option<String>,
    /// For tool messages.
    pub tool_name: Option<String>,
    /// For assistant messages.
    pub tool_calls: Vec<ToolCallDto>,
    /// JSON object.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// When counted.
    pub token_count: Option<TokenCountDto>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<Message> for MessageDto {
    fn from(m: Message) -> Self {
        Self {
            id: m.id.to_string(),
            thread_id: m.thread_id.to_string(),
            seq: m.seq,
            role: m.role.as_str().to_owned(),
            content: m.content,
            tool_call_id: m.tool_call_id,
            tool_name: m.tool_name,
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|c| ToolCallDto { id: c.id, name: c.name, arguments: c.arguments })
                .collect(),
            metadata: Value::Object(m.metadata.into_map()),
            token_count: m.token_count.map(Into::into),
            created_at: rfc3339(m.created_at),
        }
    }
}

/// Items of a batch append.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesDto {
    /// Stored messages in order.
    pub items: Vec<MessageDto>,
}

/// An agent's state in a thread. `version` 0 and `state` null mean nothing
/// was saved yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentStateDto {
    /// The thread.
    pub thread_id: String,
    /// The agent.
    pub agent_id: String,
    /// The state object, or null when never saved.
    #[schema(value_type = Option<Object>)]
    pub state: Value,
    /// Pass as `expected_version` on the next save.
    pub version: u64,
    /// RFC 3339, or null when never saved.
    pub updated_at: Option<String>,
}

impl From<AgentState> for AgentStateDto {
    fn from(s: AgentState) -> Self {
        Self {
            thread_id: s.thread_id.to_string(),
            agent_id: s.agent_id.to_string(),
            state: s.state,
            version: s.version,
            updated_at: Some(rfc3339(s.updated_at)),
        }
    }
}

/// Body of `PUT /api/threads/{id}/state/{agent_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveStateDto {
    /// The new state (a JSON object).
    #[schema(value_type = Object)]
    pub state: Value,
    /// The version this write is based on: 0 to create.
    pub expected_version: u64,
}

/// Body of `GET /health` and `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDto {
    /// `ok`.
    pub status: &'static str,
}

/// Where a search looks: exactly one of the three.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeDto {
    /// One thread.
    pub thread_id: Option<String>,
    /// Every thread of one resource.
    pub resource_id: Option<String>,
    /// `true`: the whole tenant.
    pub tenant: Option<bool>,
}

/// Neighbours around each hit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowDto {
    /// Messages before each hit (0 to 20).
    #[serde(default)]
    pub before: u32,
    /// Messages after each hit (0 to 20).
    #[serde(default)]
    pub after: u32,
}

/// Body of `POST /api/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequestDto {
    /// What to look for (1 to 8192 characters).
    pub query: String,
    /// Default: the whole tenant.
    pub scope: Option<ScopeDto>,
    /// `vector`, `lexical` or `hybrid` (default).
    pub mode: Option<String>,
    /// 1 to 100, default 10.
    pub top_k: Option<u32>,
    /// Neighbours around each hit.
    pub window: Option<WindowDto>,
    /// Drop hits scoring below this.
    pub min_score: Option<f32>,
}

/// One search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct HitDto {
    /// The message, whole.
    pub message: MessageDto,
    /// Its thread.
    pub thread_id: String,
    /// Cosine similarity (vector), BM25-derived (lexical) or fused reciprocal-rank score (hybrid).
    pub score: f32,
    /// The ranking that produced the score.
    pub mode: String,
    /// Neighbours before, in thread order.
    pub before: Vec<MessageDto>,
    /// Neighbours after, in thread order.
    pub after: Vec<MessageDto>,
}

/// How the search ran.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDto {
    /// `exact` when every candidate was compared, `hnsw`/`libsql` when an index was used, `none` for lexical.
    pub vector_index: String,
    /// The embedding model compared (empty for lexical).
    pub model: String,
    /// Messages in scope not embedded yet (not findable by vector yet).
    pub pending: u64,
    /// Messages in scope embedded by another model only: left out of vector ranking (run `memlayer reembed`).
    pub other_model: u64,
}

/// Response of `POST /api/search`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponseDto {
    /// Best first.
    pub hits: Vec<HitDto>,
    /// The mode used.
    pub mode: String,
    /// How it ran.
    pub plan: PlanDto,
}

/// Body of `POST /api/embed`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequestDto {
    /// 1 to 256 texts; each is truncated to the model's token limit.
    pub texts: Vec<String>,
}

/// Response of `POST /api/embed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedResponseDto {
    /// The model.
    pub model: String,
    /// Dimensions of each vector.
    pub dim: usize,
    /// One unit-length vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
}

/// Embedding progress of a thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingStatusDto {
    /// The current embedding model.
    pub model: String,
    /// Messages with a vector of the current model.
    pub embedded: u64,
    /// Messages waiting for an embedding (first try or retry).
    pub pending: u64,
    /// Pending messages whose embedding failed at least once.
    pub failing: u64,
    /// Messages with a vector of another model only.
    pub other_model: u64,
}

/// Body of `POST /api/models` and `PUT /api/models/{id}` (a replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBodyDto {
    /// The provider's model name (`gpt-4o`); unique per tenant.
    pub name: String,
    /// `openai`, `anthropic`, …
    pub provider: String,
    /// Context window, in tokens.
    pub context_window: u32,
    /// Most output tokens (at most `context_window`).
    pub max_output_tokens: u32,
    /// Price per million input tokens.
    #[serde(default)]
    pub input_price: f64,
    /// Price per million output tokens.
    #[serde(default)]
    pub output_price: f64,
    /// Make this the tenant's default model (the previous default loses the flag).
    #[serde(default)]
    pub is_default: bool,
}

impl From<ModelBodyDto> for NewModel {
    fn from(d: ModelBodyDto) -> Self {
        Self {
            name: d.name,
            provider: d.provider,
            context_window: d.context_window,
            max_output_tokens: d.max_output_tokens,
            input_price: d.input_price,
            output_price: d.output_price,
            is_default: d.is_default,
        }
    }
}

/// A configured model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDto {
    /// Time-ordered UUID.
    pub id: String,
    /// Model name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Context window, in tokens.
    pub context_window: u32,
    /// Most output tokens.
    pub max_output_tokens: u32,
    /// Price per million input tokens.
    pub input_price: f64,
    /// Price per million output tokens.
    pub output_price: f64,
    /// The tenant's default model.
    pub is_default: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<ModelConfig> for ModelDto {
    fn from(m: ModelConfig) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.spec.name,
            provider: m.spec.provider,
            context_window: m.spec.context_window,
            max_output_tokens: m.spec.max_output_tokens,
            input_price: m.spec.input_price,
            output_price: m.spec.output_price,
            is_default: m.spec.is_default,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

/// An agent's memory options, copied into threads created for it.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryOptionsDto {
    /// Recent messages loaded by default (1 to 1000).
    pub last_n: Option<u32>,
    /// Search hits within a thread by default (1 to 100).
    pub top_k: Option<u32>,
    /// Token budget for assembled context.
    pub token_budget: Option<u32>,
}

/// Body of `POST /api/agents` and `PUT /api/agents/{id}` (a replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBodyDto {
    /// Unique per tenant; threads name the agent by it (`agent_id`).
    pub name: String,
    /// A configured model's id.
    pub model_id: String,
    /// System prompt.
    #[serde(default)]
    pub system_prompt: String,
    /// Configured tools' ids, in order.
    #[serde(default)]
    pub tool_ids: Vec<String>,
    /// Memory options.
    #[serde(default)]
    pub memory: MemoryOptionsDto,
}

impl TryFrom<AgentBodyDto> for NewAgent {
    type Error = DomainError;
    fn try_from(d: AgentBodyDto) -> Result<Self, DomainError> {
        let new = Self {
            name: AgentId::parse(d.name).map_err(|e| DomainError::new("name", e.reason))?,
            model_id: d.model_id.parse::<ModelId>()?,
            system_prompt: d.system_prompt,
            tool_ids: d.tool_ids.iter().map(|t| t.parse::<ToolId>()).collect::<Result<_, _>>()?,
            memory: MemoryOptions {
                last_n: d.memory.last_n,
                top_k: d.memory.top_k,
                token_budget: d.memory.token_budget,
            },
        };
        new.validate()?;
        Ok(new)
    }
}

/// A configured agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDto {
    /// Time-ordered UUID.
    pub id: String,
    /// Name, as threads' `agent_id`.
    pub name: String,
    /// Its model's id.
    pub model_id: String,
    /// System prompt.
    pub system_prompt: String,
    /// Its tools' ids, in order.
    pub tool_ids: Vec<String>,
    /// Memory options (unset ones are `null`).
    pub memory: MemoryOptionsDto,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<AgentConfig> for AgentDto {
    fn from(a: AgentConfig) -> Self {
        let m = a.spec.memory;
        Self {
            id: a.id.to_string(),
            name: a.spec.name.to_string(),
            model_id: a.spec.model_id.to_string(),
            system_prompt: a.spec.system_prompt,
            tool_ids: a.spec.tool_ids.iter().map(ToString::to_string).collect(),
            memory: MemoryOptionsDto { last_n: m.last_n, top_k: m.top_k, token_budget: m.token_budget },
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// Body of `POST /api/tools` and `PUT /api/tools/{id}` (a replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolBodyDto {
    /// Function name: ASCII letters, digits, `_`, `-`; unique per tenant.
    pub name: String,
    /// What the tool does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the parameters: an object schema (`"type": "object"`).
    #[schema(value_type = Object)]
    pub parameters: Value,
}

impl From<ToolBodyDto> for NewTool {
    fn from(d: ToolBodyDto) -> Self {
        Self { name: d.name, description: d.description, parameters: d.parameters }
    }
}

/// A configured tool.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolDto {
    /// Time-ordered UUID.
    pub id: String,
    /// Function name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its parameters.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<ToolConfig> for ToolDto {
    fn from(t: ToolConfig) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.spec.name,
            description: t.spec.description,
            parameters: t.spec.parameters,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// Tools of an agent: `{"items": [...]}`, whole and in the agent's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolsDto {
    /// The tools.
    pub items: Vec<ToolDto>,
}

/// Body of `PUT /api/settings/{category}/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSettingDto {
    /// Any JSON value.
    #[schema(value_type = Object)]
    pub value: Value,
}

/// A setting.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingDto {
    /// Category.
    pub category: String,
    /// Key.
    pub key: String,
    /// Any JSON value (the caller's `default` when not stored).
    #[schema(value_type = Object)]
    pub value: Value,
    /// Whether the value is stored (false: it is the request's `default`).
    pub stored: bool,
    /// RFC 3339 time of the last write; `null` when not stored.
    pub updated_at: Option<String>,
}

impl From<Setting> for SettingDto {
    fn from(s: Setting) -> Self {
        Self {
            category: s.category.as_str().to_owned(),
            key: s.key.as_str().to_owned(),
            value: s.value,
            stored: true,
            updated_at: Some(rfc3339(s.updated_at)),
        }
    }
}
