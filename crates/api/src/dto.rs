//! JSON wire shapes of the HTTP API and their conversions to and from domain
//! types. Domain types are not the wire format: changing one must not
//! silently change the other.

use memlayer_domain::{
    AgentConfig, AgentName, AgentState, DomainError, ForkThread, MemoryOptions, Message, Metadata, ModelConfig,
    ModelId, NewAgent, NewMessage, NewModel, NewThread, NewTool, ResourceId, Role, SearchMode, Setting, Thread,
    ThreadPatch, Title, TokenCount, ToolCall, ToolConfig, ToolId, WorkingFormat, WorkingFormatKind,
    WorkingMemoryOptions, WorkingScopeKind,
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

/// A whole number however JSON writes it: `49` or `49.0` (JSON Schema's
/// `integer` is both, so a client generated from the document may send
/// either). A fraction, a negative number or one out of range is an error.
pub(crate) fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(d)?;
    let int = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        // Exactly representable whole floats only: below 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked whole and in range")]
        (None, Some(f)) if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) => Some(f as u64),
        _ => None,
    };
    int.and_then(|u| T::try_from(u).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("invalid value: {n}, expected a whole number in range")))
}

/// [`whole`] for an optional field (`null` or absent is `None`).
pub(crate) fn whole_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct W<T: TryFrom<u64>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<W<T>>::deserialize(d)?.map(|w| w.0))
}

/// A list page: `{"items": [...], "next_cursor": "…" | null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageDto<T> {
    /// Items in order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` at the end. A message
    /// page may hold fewer than `limit` items and still have a cursor: it
    /// stops at the response budget (`memory.max_response_bytes`).
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
    /// The user or entity owning the thread: 1 to 256 ASCII letters, digits, `- _ . : @`.
    #[schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
    /// The agent of the thread: 1 to 128 ASCII letters, digits, `- _ . : @`.
    #[schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 128)]
    pub agent_id: Option<String>,
    /// Title: up to 512 characters, not only whitespace (it is trimmed).
    #[schema(
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        min_length = 1,
        max_length = 512
    )]
    pub title: Option<String>,
    /// Model whose tokenizer counts the thread's messages (`gpt-4o`…): 1 to
    /// 128 printable ASCII characters, no spaces.
    #[schema(pattern = "^[!-~]+$", min_length = 1, max_length = 128)]
    pub model: Option<String>,
    /// JSON object (at most 64 KiB serialised).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl TryFrom<CreateThreadDto> for NewThread {
    type Error = DomainError;
    fn try_from(d: CreateThreadDto) -> Result<Self, DomainError> {
        Ok(Self {
            resource_id: d.resource_id.map(ResourceId::parse).transpose()?,
            agent_id: d.agent_id.map(AgentName::parse).transpose()?,
            title: d.title.map(Title::parse).transpose()?,
            model: d.model.as_deref().map(memlayer_domain::parse_model).transpose()?,
            metadata: d.metadata.map(Metadata::from_value).transpose()?.unwrap_or_default(),
        })
    }
}

/// Body of `POST /api/threads/{id}/fork`: both fields optional (`{}`
/// forks the whole thread under the title "<source title> (fork)").
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkThreadDto {
    /// The last sequence number copied: 1 up to the thread's
    /// `message_count` (a larger one is 400 naming `at_seq`); default all.
    #[schema(minimum = 1)]
    pub at_seq: Option<i64>,
    /// The new thread's title (as on create); default the source's title
    /// followed by " (fork)".
    #[schema(
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        min_length = 1,
        max_length = 512
    )]
    pub title: Option<String>,
}

impl TryFrom<ForkThreadDto> for ForkThread {
    type Error = DomainError;
    fn try_from(d: ForkThreadDto) -> Result<Self, DomainError> {
        ForkThread::new(d.at_seq, d.title.map(Title::parse).transpose()?)
    }
}

/// Body of `PATCH /api/threads/{id}`: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchThreadDto {
    /// New title or `null` (as on create).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]", min_length = 1, max_length = 512)]
    pub title: Option<Option<String>>,
    /// New resource or `null` (as on create).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 256)]
    pub resource_id: Option<Option<String>>,
    /// New agent or `null` (as on create).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 128)]
    pub agent_id: Option<Option<String>>,
    /// New model or `null` (as on create).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[!-~]+$", min_length = 1, max_length = 128)]
    pub model: Option<Option<String>>,
    /// Replaces the whole metadata object (at most 64 KiB); `null` empties it.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Sets `metadata.pinned` (`true`: the thread is exempt from retention
    /// policies), after `metadata` when both are given; alone it keeps the
    /// other metadata keys.
    pub pinned: Option<bool>,
}

impl TryFrom<PatchThreadDto> for ThreadPatch {
    type Error = DomainError;
    fn try_from(d: PatchThreadDto) -> Result<Self, DomainError> {
        Ok(Self {
            title: d.title.map(|t| t.map(Title::parse).transpose()).transpose()?,
            resource_id: d.resource_id.map(|r| r.map(ResourceId::parse).transpose()).transpose()?,
            agent_id: d.agent_id.map(|a| a.map(AgentName::parse).transpose()).transpose()?,
            model: d.model.map(|m| m.as_deref().map(memlayer_domain::parse_model).transpose()).transpose()?,
            metadata: match d.metadata {
                None => None,
                Some(Value::Null) => Some(Metadata::default()),
                Some(v) => Some(Metadata::from_value(v)?),
            },
            pinned: d.pinned,
        })
    }
}

/// A tool call requested by an assistant message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallDto {
    /// Call id, answered by a later tool message's `tool_call_id` (1 to 256 bytes).
    #[schema(min_length = 1, max_length = 256)]
    pub id: String,
    /// Tool name (1 to 256 bytes).
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// Arguments (any JSON; `null` when absent).
    #[serde(default)]
    pub arguments: Value,
}

/// A message to append.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessageDto {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text; may be empty only for an assistant message with tool calls.
    /// Never the NUL character (U+0000).
    #[serde(default)]
    #[schema(pattern = "^[^\\u0000]*$")]
    pub content: String,
    /// Required for (and only allowed on) `tool` messages.
    #[schema(pattern = "^[^\\u0000]*$")]
    pub tool_call_id: Option<String>,
    /// The tool's name, for tool messages.
    #[schema(pattern = "^[^\\u0000]*$")]
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
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<NewMessageDto>,
}

/// Body of `POST /api/threads/{id}/messages`: one message object, or
/// `{"messages": [...]}` (untagged: the server tells them apart by the
/// `messages` key). Documentation only; the handler parses the JSON itself.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "documentation-only type for the OpenAPI schema")]
pub enum AppendBody {
    /// One message.
    One(NewMessageDto),
    /// A batch.
    Batch(MessageBatchDto),
}

/// The schemas JSON Schema attributes cannot derive: a message's rules
/// depend on its role. Replaces the derived `NewMessageDto` component in the
/// document (module `openapi` applies it).
#[must_use]
pub fn new_message_schema() -> Value {
    // No NUL character (U+0000) in text fields: neither database stores it.
    let no_nul = "^[^\\u0000]*$";
    let short = serde_json::json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": no_nul,
        "description": "1 to 256 bytes of UTF-8 (64 characters always fit), no NUL"});
    let nonempty = serde_json::json!({"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS,
        "pattern": no_nul, "description": "Text, not empty: at most 1 MiB of UTF-8 (262,144 characters always fit), no NUL"});
    let metadata = serde_json::json!({"type": ["object", "null"], "description": "JSON object (at most 64 KiB)"});
    let no_calls = serde_json::json!({"type": "array", "maxItems": 0, "items": {}, "description": "Only assistant messages carry tool calls"});
    let call = serde_json::json!({"type": "object", "description": "A tool call requested by an assistant message",
        "properties": {"id": short, "name": short, "arguments": {"description": "Any JSON; `null` when absent. The \
            arguments of all of a message's calls are at most 256 KiB of compact JSON together (a 400 above)"}},
        "required": ["id", "name"], "additionalProperties": false});
    let calls = serde_json::json!({"type": "array", "items": call});
    let absent = serde_json::json!({"type": "null", "description": "Only tool messages carry one"});
    let variant = |role: &[&str], props: Value, required: &[&str], description: &str| {
        let mut properties = serde_json::json!({"role": {"type": "string", "enum": role}, "metadata": metadata,
            "tool_name": {"type": ["string", "null"], "minLength": 1, "maxLength": 64, "pattern": no_nul,
                          "description": "The tool's name (1 to 256 bytes, no NUL)"}});
        if let (Some(o), Some(extra)) = (properties.as_object_mut(), props.as_object()) {
            o.extend(extra.clone());
        }
        let mut req = vec!["role"];
        req.extend_from_slice(required);
        serde_json::json!({"type": "object", "description": description, "properties": properties,
            "required": req, "additionalProperties": false})
    };
    serde_json::json!({
        "description": "A message to append; its rules depend on its `role`.",
        "oneOf": [
            variant(&["system", "user"], serde_json::json!({"content": nonempty, "tool_call_id": absent, "tool_calls": no_calls}),
                &["content"], "A system or user message: text, no tool calls."),
            variant(&["assistant"], serde_json::json!({"content": nonempty, "tool_call_id": absent, "tool_calls": calls}),
                &["content"], "An assistant message with text (and perhaps tool calls)."),
            variant(&["assistant"], serde_json::json!({"content": {"type": "string", "maxLength": 0}, "tool_call_id": absent,
                "tool_calls": {"type": "array", "minItems": 1, "items": call}}),
                &["tool_calls"], "An assistant message that only calls tools (empty or absent content)."),
            variant(&["tool"], serde_json::json!({"content": nonempty, "tool_call_id": short, "tool_calls": no_calls}),
                &["content", "tool_call_id"], "A tool's answer to the call `tool_call_id`."),
        ],
    })
}

/// Characters of content that always fit [`MAX_CONTENT_BYTES`] (4 bytes each at most).
const MAX_CONTENT_CHARS: usize = memlayer_domain::MAX_CONTENT_BYTES / 4;

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
    /// The new state: a JSON object (at most 1 MiB serialised).
    #[schema(value_type = Object)]
    pub state: Value,
    /// The version this write is based on: 0 to create; at most
    /// `i64::MAX - 1` (`AgentState::MAX_EXPECTED_VERSION`).
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_806_i64)]
    pub expected_version: u64,
}

/// Body of `GET /health` and `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDto {
    /// `ok`.
    pub status: &'static str,
    /// With `redis.url` set (`/ready` only): `ok`, or why Redis cannot be
    /// reached; the server stays ready meanwhile, with per-server limits
    /// and the catalog cache's TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

/// Where a search looks: exactly one of the three. (The document's schema
/// is [`scope_schema`]: one object per choice.)
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

/// The documented schema of [`ScopeDto`]: exactly one of the three keys.
#[must_use]
pub fn scope_schema() -> Value {
    serde_json::json!({
        "description": "Where a search looks: exactly one of the three.",
        "oneOf": [
            {"type": "object", "description": "One thread.", "additionalProperties": false, "required": ["thread_id"],
             "properties": {"thread_id": {"type": "string", "format": "uuid"}}},
            {"type": "object", "description": "Every thread of one resource.", "additionalProperties": false,
             "required": ["resource_id"],
             "properties": {"resource_id": {"type": "string", "pattern": "^[A-Za-z0-9._:@-]+$", "minLength": 1, "maxLength": 256}}},
            {"type": "object", "description": "The whole tenant.", "additionalProperties": false, "required": ["tenant"],
             "properties": {"tenant": {"type": "boolean", "enum": [true]}}},
        ],
    })
}

/// Neighbours around each hit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowDto {
    /// Messages before each hit (0 to 20).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 20)]
    pub before: u32,
    /// Messages after each hit (0 to 20).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 20)]
    pub after: u32,
}

/// How a search ranks messages: `vector` (cosine similarity of
/// embeddings), `lexical` (BM25 over the text) or `hybrid` (both, fused by
/// the mean of their min-max normalised scores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchModeDto {
    /// By cosine similarity of embeddings.
    Vector,
    /// By BM25 over message text.
    Lexical,
    /// Both rankings fused (the mean of their min-max normalised scores).
    Hybrid,
}

impl From<SearchModeDto> for SearchMode {
    fn from(m: SearchModeDto) -> Self {
        match m {
            SearchModeDto::Vector => Self::Vector,
            SearchModeDto::Lexical => Self::Lexical,
            SearchModeDto::Hybrid => Self::Hybrid,
        }
    }
}

impl From<SearchMode> for SearchModeDto {
    fn from(m: SearchMode) -> Self {
        match m {
            SearchMode::Vector => Self::Vector,
            SearchMode::Lexical => Self::Lexical,
            SearchMode::Hybrid => Self::Hybrid,
        }
    }
}

/// Body of `POST /api/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequestDto {
    /// What to look for: 1 to 8192 characters, not only whitespace.
    #[schema(
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        min_length = 1,
        max_length = 8192
    )]
    pub query: String,
    /// Default: the whole tenant.
    pub scope: Option<ScopeDto>,
    /// `vector`, `lexical` or `hybrid` (default).
    pub mode: Option<SearchModeDto>,
    /// 1 to 100; default the thread's `_memory.top_k` within one thread, else 10.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<u32>,
    /// Neighbours around each hit.
    pub window: Option<WindowDto>,
    /// Drop hits scoring below this (a 32-bit float).
    #[schema(minimum = -3.4e38, maximum = 3.4e38)]
    pub min_score: Option<f32>,
}

/// One search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct HitDto {
    /// The message, whole.
    pub message: MessageDto,
    /// Its thread.
    pub thread_id: String,
    /// Cosine similarity (vector), BM25-derived (lexical) or the fused score (hybrid: the mean of both legs' min-max normalised scores, 0 to 1).
    pub score: f32,
    /// The ranking that produced the score.
    pub mode: SearchModeDto,
    /// Neighbours before, in thread order. Each message appears once in a
    /// response: a neighbour that is itself a hit appears only as that hit,
    /// and one in the windows of several hits only in the best-ranked one's
    /// (use `seq` to put a context back together).
    pub before: Vec<MessageDto>,
    /// Neighbours after, in thread order (each message once, as `before`).
    pub after: Vec<MessageDto>,
}

/// How the search ran.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDto {
    /// `exact` when every candidate was compared, `hnsw`/`libsql` when an index was used, `none` for lexical.
    pub vector_index: String,
    /// The embedding model compared (empty for lexical).
    pub model: String,
    /// Messages in scope not embedded yet (not findable by vector yet), counted up to 1,000: 1,000 means at least that many (`counts_capped`; the exact figure: `GET /api/threads/{id}/embeddings`).
    pub pending: u64,
    /// Messages in scope embedded by another model only: left out of vector ranking (run `memlayer reembed`); counted up to 1,000 like `pending`.
    pub other_model: u64,
    /// `true` when `pending` or `other_model` reached 1,000 and counting stopped there, so a search's cost stays bounded behind any embedding backlog.
    pub counts_capped: bool,
    /// The ranking stages that ran, in order: `vector` (cosine), `lexical`
    /// (BM25 over stemmed words; `ts_rank` on Postgres) and, for hybrid,
    /// `fusion` (the mean of both legs' min-max normalised scores).
    pub stages: Vec<StageDto>,
}

/// One ranking stage of a search.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageDto {
    /// `vector`, `lexical` or `fusion`.
    #[schema(example = "vector")]
    pub stage: String,
    /// The candidates it handed on (before `min_score` and `top_k`).
    pub candidates: u64,
}

/// Response of `POST /api/search`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponseDto {
    /// Best first.
    pub hits: Vec<HitDto>,
    /// The mode used.
    pub mode: SearchModeDto,
    /// How it ran.
    pub plan: PlanDto,
    /// `true` when the response budget (`memory.max_response_bytes`) cut the
    /// results: fewer hits than found, or fewer neighbours than the window
    /// asked for. The best hit is always returned.
    pub truncated: bool,
}

/// Body of `POST /api/embed`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequestDto {
    /// 1 to 256 texts, at most 1 MiB of UTF-8 together (262,144 characters
    /// always fit); each is truncated to the model's token limit.
    #[schema(min_items = 1, max_items = 256)]
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

/// `GET /api/usage`: what the tenant stores against its storage quota.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDto {
    /// The tenant.
    pub tenant: String,
    /// Live threads (a deleted thread stops counting at once).
    pub threads: QuotaUsageDto,
    /// Live messages of live threads.
    pub messages: QuotaUsageDto,
    /// Bytes of those messages, as `Message::approx_bytes` counts them: content, tool fields, tool calls and
    /// metadata as compact JSON, plus 320 per message.
    pub bytes: QuotaUsageDto,
}

/// One dimension of a tenant's storage.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaUsageDto {
    /// What the tenant stores.
    pub used: u64,
    /// The most it may store; `null`: unlimited.
    pub limit: Option<u64>,
}

impl From<memlayer_app::TenantUsage> for UsageDto {
    fn from(u: memlayer_app::TenantUsage) -> Self {
        let one = |kind| QuotaUsageDto { used: u.usage.get(kind), limit: u.quota.limit(kind) };
        Self {
            tenant: u.tenant.to_string(),
            threads: one(memlayer_domain::QuotaKind::Threads),
            messages: one(memlayer_domain::QuotaKind::Messages),
            bytes: one(memlayer_domain::QuotaKind::Bytes),
        }
    }
}

/// Body of `POST /api/models` and `PUT /api/models/{id}` (a replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBodyDto {
    /// The provider's model name (`gpt-4o`): 1 to 128 printable ASCII
    /// characters without spaces; unique per tenant.
    #[schema(pattern = "^[!-~]+$", min_length = 1, max_length = 128)]
    pub name: String,
    /// `openai`, `anthropic`, …: 1 to 64 printable ASCII characters without spaces.
    #[schema(pattern = "^[!-~]+$", min_length = 1, max_length = 64)]
    pub provider: String,
    /// Context window, in tokens (at least 1).
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u32)]
    pub context_window: u32,
    /// Most output tokens: 1 to `context_window` (a rule between two fields
    /// that JSON Schema cannot state; breaking it is a 400).
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u32)]
    pub max_output_tokens: u32,
    /// Price per million input tokens (at least 0).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub input_price: f64,
    /// Price per million output tokens (at least 0).
    #[serde(default)]
    #[schema(minimum = 0)]
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

/// A model in the catalog.
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
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 1000)]
    pub last_n: Option<u32>,
    /// Search hits within a thread by default (1 to 100).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<u32>,
    /// Token budget for assembled context (1 to 10,000,000).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub token_budget: Option<u32>,
    /// How the agent keeps working memory; `null` or absent: the defaults
    /// (any format, no schema, 10 versions). Read from the agent whenever
    /// working memory is used, never copied into threads.
    #[serde(default)]
    pub working_memory: Option<WorkingMemoryOptionsDto>,
    /// How contexts are assembled: section priority and shares, recall,
    /// processors (`POST /api/threads/{id}/context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context_routes::ContextOptionsDto>,
}

/// An agent's working-memory options (`memory.working_memory`). The
/// document's schema in `/api/openapi.json` is completed by hand: `schema`
/// goes with `format: json` only, `template` with `markdown` only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingMemoryOptionsDto {
    /// `resource` (default: one document per resource, across its threads)
    /// or `thread` (one per thread): the document context assembly reads.
    #[serde(default)]
    pub scope: Option<String>,
    /// `json` (default) or `markdown`.
    #[serde(default)]
    pub format: Option<String>,
    /// With `json`: a JSON Schema (an object or a boolean, at most 64 KiB)
    /// every document must satisfy; it must compile (draft from `$schema`,
    /// 2020-12 by default; no external `$ref` is fetched), else the agent is
    /// refused with a 400 naming `memory.working_memory.schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// With `markdown`: what a never-written document reads as (at most 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Versions kept, the current one included (1 to 100, default 10).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub versions: Option<u32>,
}

impl TryFrom<WorkingMemoryOptionsDto> for WorkingMemoryOptions {
    type Error = DomainError;
    fn try_from(d: WorkingMemoryOptionsDto) -> Result<Self, DomainError> {
        let scope = match d.scope.as_deref() {
            None => WorkingScopeKind::default(),
            Some(s) => WorkingScopeKind::parse("memory.working_memory.scope", s)?,
        };
        let kind = match d.format.as_deref() {
            None => WorkingFormatKind::default(),
            Some(s) => WorkingFormatKind::parse("memory.working_memory.format", s)?,
        };
        let format = match (kind, d.schema, d.template) {
            (WorkingFormatKind::Json, schema, None) => WorkingFormat::Json { schema },
            (WorkingFormatKind::Markdown, None, template) => WorkingFormat::Markdown { template },
            (WorkingFormatKind::Json, _, Some(_)) => {
                return Err(DomainError::new("memory.working_memory.template", "goes with `format: markdown` only"));
            }
            (WorkingFormatKind::Markdown, Some(_), _) => {
                return Err(DomainError::new("memory.working_memory.schema", "goes with `format: json` only"));
            }
        };
        let options = Self { scope, format, versions: d.versions.unwrap_or(WorkingMemoryOptions::DEFAULT_VERSIONS) };
        options.validate()?;
        Ok(options)
    }
}

impl From<WorkingMemoryOptions> for WorkingMemoryOptionsDto {
    fn from(o: WorkingMemoryOptions) -> Self {
        let format = o.format.kind().as_str().to_owned();
        let (schema, template) = match o.format {
            WorkingFormat::Json { schema } => (schema, None),
            WorkingFormat::Markdown { template } => (None, template),
        };
        Self {
            scope: Some(o.scope.as_str().to_owned()),
            format: Some(format),
            schema,
            template,
            versions: Some(o.versions),
        }
    }
}

/// Body of `POST /api/agents` and `PUT /api/agents/{id}` (a replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBodyDto {
    /// Unique per tenant; threads name the agent by it (`agent_id`): 1 to
    /// 128 ASCII letters, digits, `- _ . : @`.
    #[schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 128)]
    pub name: String,
    /// The id of a model in the catalog (an unknown one is a 400).
    #[schema(format = Uuid)]
    pub model_id: String,
    /// System prompt: at most 64 KiB of UTF-8 (16,384 characters always fit).
    #[serde(default)]
    #[schema(max_length = 16_384)]
    pub system_prompt: String,
    /// Ids of tools in the catalog, in order (at most 64; an unknown one is a 400).
    #[serde(default)]
    #[schema(value_type = Vec<uuid::Uuid>, max_items = 64)]
    pub tool_ids: Vec<String>,
    /// Memory options.
    #[serde(default)]
    pub memory: MemoryOptionsDto,
    /// How its workflow steps run when a step names no runner of its own
    /// (absent: `workflows.default_runner`).
    #[serde(default)]
    pub runner: Option<crate::workflow_routes::RunnerDto>,
}

impl TryFrom<AgentBodyDto> for NewAgent {
    type Error = DomainError;
    fn try_from(d: AgentBodyDto) -> Result<Self, DomainError> {
        let new = Self {
            name: AgentName::parse(d.name).map_err(|e| DomainError::new("name", e.reason))?,
            model_id: d.model_id.parse::<ModelId>()?,
            system_prompt: d.system_prompt,
            tool_ids: d.tool_ids.iter().map(|t| t.parse::<ToolId>()).collect::<Result<_, _>>()?,
            memory: MemoryOptions {
                last_n: d.memory.last_n,
                top_k: d.memory.top_k,
                token_budget: d.memory.token_budget,
                working_memory: d.memory.working_memory.map(WorkingMemoryOptions::try_from).transpose()?,
                context: d
                    .memory
                    .context
                    .as_ref()
                    .map(memlayer_domain::ContextOptions::try_from)
                    .transpose()
                    .map_err(|e| DomainError::new("memory.context", format!("{}: {}", e.field, e.reason)))?,
            },
            runner: d.runner.map(|r| r.spec("runner")).transpose()?,
        };
        new.validate()?;
        Ok(new)
    }
}

/// An agent in the catalog.
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
    /// Its workflow steps' runner, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<crate::workflow_routes::RunnerDto>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<AgentConfig> for AgentDto {
    fn from(a: AgentConfig) -> Self {
        let m = &a.spec.memory;
        Self {
            id: a.id.to_string(),
            name: a.spec.name.to_string(),
            model_id: a.spec.model_id.to_string(),
            system_prompt: a.spec.system_prompt,
            tool_ids: a.spec.tool_ids.iter().map(ToString::to_string).collect(),
            memory: MemoryOptionsDto {
                last_n: m.last_n,
                top_k: m.top_k,
                token_budget: m.token_budget,
                working_memory: m.working_memory.clone().map(Into::into),
                context: m.context.as_ref().map(Into::into),
            },
            runner: a.spec.runner.as_ref().map(Into::into),
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// Body of `POST /api/tools` and `PUT /api/tools/{id}` (a replacement).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolBodyDto {
    /// Function name: 1 to 64 ASCII letters, digits, `_`, `-`; unique per tenant.
    #[schema(pattern = "^[A-Za-z0-9_-]+$", min_length = 1, max_length = 64)]
    pub name: String,
    /// What the tool does: at most 4 KiB of UTF-8 (1,024 characters always fit).
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// JSON Schema of the parameters (at most 64 KiB): an object schema
    /// (`"type": "object"`), `properties` (if present) an object of schema
    /// objects, `required` (if present) names of `properties` (a rule JSON
    /// Schema cannot state; breaking it is a 400).
    #[schema(schema_with = tool_parameters_schema)]
    pub parameters: Value,
}

fn tool_parameters_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    let object = || ObjectBuilder::new().schema_type(SchemaType::Type(Type::Object));
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .description(Some("An object JSON Schema: `type` is `object`"))
        .property(
            "type",
            ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)).enum_values(Some(["object"])),
        )
        .required("type")
        .property("properties", object().additional_properties(Some(AdditionalProperties::RefOr(object().into()))))
        .property(
            "required",
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(SchemaType::Type(Type::String))),
        )
        .build()
}

impl From<ToolBodyDto> for NewTool {
    fn from(d: ToolBodyDto) -> Self {
        Self { name: d.name, description: d.description, parameters: d.parameters }
    }
}

/// A tool in the catalog.
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
    /// Any JSON value, `null` included (at most 64 KiB serialised).
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

/// A scope an API key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyScopeDto {
    /// Reads of memory: GET routes, search, embedding a text.
    Read,
    /// Changes to memory: create, append, state, delete.
    Write,
    /// The catalog, keys and retention.
    Admin,
}

impl From<KeyScopeDto> for memlayer_domain::Scope {
    fn from(s: KeyScopeDto) -> Self {
        match s {
            KeyScopeDto::Read => Self::Read,
            KeyScopeDto::Write => Self::Write,
            KeyScopeDto::Admin => Self::Admin,
        }
    }
}

impl From<memlayer_domain::Scope> for KeyScopeDto {
    fn from(s: memlayer_domain::Scope) -> Self {
        match s {
            memlayer_domain::Scope::Read => Self::Read,
            memlayer_domain::Scope::Write => Self::Write,
            memlayer_domain::Scope::Admin => Self::Admin,
        }
    }
}

/// Body of `POST /api/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyDto {
    /// What the key allows: one or more of `read`, `write`, `admin`
    /// (independent: `admin` does not imply the others). A credential may
    /// grant only scopes it holds itself (else 403).
    #[schema(min_items = 1)]
    pub scopes: Vec<KeyScopeDto>,
    /// Binds the key to one resource: 1 to 256 ASCII letters, digits,
    /// `- _ . : @`. A credential bound to a resource may create only keys
    /// bound to the same one (else 403).
    #[schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
    /// A label for people: 1 to 200 bytes of UTF-8 without control
    /// characters, not only whitespace (it is trimmed); 50 characters
    /// always fit.
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t-\\r \\u0000-\\u001f\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 50
    )]
    pub name: Option<String>,
    /// Lifetime from now: a whole number and a unit, `d`, `h`, `m` or `s`
    /// (`90d`, `12h`), at most `3650d`; absent: the key never expires.
    #[schema(
        pattern = "^(([1-9][0-9]{0,2}|[12][0-9]{3}|3[0-5][0-9]{2}|36[0-4][0-9]|3650)d|[1-9][0-9]{0,3}h|[1-9][0-9]{0,5}m|[1-9][0-9]{0,7}s)$"
    )]
    pub expires_in: Option<String>,
}

impl TryFrom<NewKeyDto> for memlayer_app::NewKey {
    type Error = DomainError;
    fn try_from(d: NewKeyDto) -> Result<Self, DomainError> {
        let expires_at = d
            .expires_in
            .as_deref()
            .map(|text| {
                memlayer_app::parse_lifetime(text)
                    .map(|lifetime| memlayer_domain::now() + lifetime)
                    .map_err(|reason| DomainError::new("expires_in", reason))
            })
            .transpose()?;
        Ok(Self {
            scopes: d.scopes.into_iter().map(memlayer_domain::Scope::from).collect(),
            resource: d.resource_id.map(ResourceId::parse).transpose()?,
            name: d.name,
            expires_at,
        })
    }
}

/// An API key's record. Its secret is never shown again after creation,
/// and no hash of it either.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyDto {
    /// The key's public id: 16 lowercase hex digits, the part of the key
    /// after `ml_`.
    pub id: String,
    /// The tenant the key acts for.
    pub tenant: String,
    /// Its label, if any.
    pub name: Option<String>,
    /// What it allows.
    pub scopes: Vec<KeyScopeDto>,
    /// The resource it is bound to, if any.
    pub resource_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `null`: never expires.
    pub expires_at: Option<String>,
    /// RFC 3339; `null`: not revoked.
    pub revoked_at: Option<String>,
    /// RFC 3339 of the last request made with it, written in batches (it may
    /// lag by `auth.keys.flush_interval_secs`); `null`: never used.
    pub last_used_at: Option<String>,
}

impl From<memlayer_domain::ApiKey> for ApiKeyDto {
    fn from(k: memlayer_domain::ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            tenant: k.tenant.as_str().to_owned(),
            name: k.name,
            scopes: k.scopes.iter().map(KeyScopeDto::from).collect(),
            resource_id: k.resource.map(|r| r.to_string()),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// A key just created: its record, and the key itself, shown in this
/// response only (only a hash of the secret is stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyDto {
    /// The record.
    #[serde(flatten)]
    pub record: ApiKeyDto,
    /// The whole key, `ml_<id>_<secret>`: send it as `Authorization: Bearer
    /// <key>` (or `X-Api-Key`). Store it now; it cannot be shown again.
    pub key: String,
}

impl From<memlayer_app::CreatedKey> for CreatedKeyDto {
    fn from(c: memlayer_app::CreatedKey) -> Self {
        Self { key: c.secret.reveal(), record: c.key.into() }
    }
}

/// A page of a tenant's API keys, newest first, revoked ones included.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysDto {
    /// The keys.
    pub items: Vec<ApiKeyDto>,
    /// Pass as `cursor` to get the next page; `null` at the end.
    pub next_cursor: Option<String>,
}
