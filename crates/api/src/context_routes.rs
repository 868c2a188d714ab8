//! Context assembly over HTTP: `POST /api/threads/{id}/context` (`read`
//! scope) and its wire shapes, and the wire shape of an agent's context
//! options (`memory.context`), registered by [`register`].

use axum::extract::State;
use axum::http::StatusCode;
use memlayer_app::{AssembledContext, ContextError, ContextMessage, ContextRequest, Dropped, Source};
use memlayer_domain::{
    Budget, ContextOptions, DomainError, MAX_BUDGET, Priority, ProcessorSpec, RecallOptions, RecallScope, Role,
    Section, Shares, ThreadId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Read;
use crate::dto::{SearchModeDto, whole, whole_opt};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Adds the context route.
pub(crate) fn register(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(assemble_context))
}

/// A section of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SectionDto {
    /// The agent's system prompt (never dropped).
    System,
    /// The working-memory document.
    WorkingMemory,
    /// The thread's summary.
    Summary,
    /// Recalled messages.
    Recall,
    /// The newest messages.
    Recent,
}

impl From<SectionDto> for Section {
    fn from(s: SectionDto) -> Self {
        match s {
            SectionDto::System => Self::System,
            SectionDto::WorkingMemory => Self::WorkingMemory,
            SectionDto::Summary => Self::Summary,
            SectionDto::Recall => Self::Recall,
            SectionDto::Recent => Self::Recent,
        }
    }
}

impl From<Section> for SectionDto {
    fn from(s: Section) -> Self {
        match s {
            Section::System => Self::System,
            Section::WorkingMemory => Self::WorkingMemory,
            Section::Summary => Self::Summary,
            Section::Recall => Self::Recall,
            Section::Recent => Self::Recent,
        }
    }
}

/// Shares of the budget per section, in percent (1 to 100). Working
/// memory's and summary's are hard caps; recall's and recent's are soft:
/// what is left after every section had its turn goes back to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharesDto {
    /// Working memory's share.
    #[serde(default, deserialize_with = "whole_opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub working_memory: Option<u32>,
    /// The summary's share.
    #[serde(default, deserialize_with = "whole_opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub summary: Option<u32>,
    /// Recall's share.
    #[serde(default, deserialize_with = "whole_opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub recall: Option<u32>,
    /// Recent messages' share.
    #[serde(default, deserialize_with = "whole_opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub recent: Option<u32>,
}

/// A section that can be ordered (the system prompt always comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrioritySectionDto {
    /// The working-memory document.
    WorkingMemory,
    /// The thread's summary.
    Summary,
    /// Recalled messages.
    Recall,
    /// The newest messages.
    Recent,
}

impl From<PrioritySectionDto> for Section {
    fn from(s: PrioritySectionDto) -> Self {
        match s {
            PrioritySectionDto::WorkingMemory => Self::WorkingMemory,
            PrioritySectionDto::Summary => Self::Summary,
            PrioritySectionDto::Recall => Self::Recall,
            PrioritySectionDto::Recent => Self::Recent,
        }
    }
}

/// Where recall searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecallScopeDto {
    /// The thread's older messages.
    Thread,
    /// The thread's older messages and its resource's other threads.
    Resource,
}

/// Neighbours recalled around each hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallWindowDto {
    /// Messages before each hit (0 to 20).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 0, maximum = 20)]
    pub before: Option<u32>,
    /// Messages after each hit (0 to 20).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 0, maximum = 20)]
    pub after: Option<u32>,
}

/// How recall searches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallDto {
    /// `false` switches recall off (default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `thread` (default) or `resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RecallScopeDto>,
    /// Hits recalled (1 to 100; default the thread's `top_k`, else 10).
    #[serde(default, deserialize_with = "whole_opt", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<u32>,
    /// Neighbours around each hit (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RecallWindowDto>,
    /// Ranking (default `vector`: by meaning; `hybrid` adds BM25 over the
    /// scope's messages, whose cost grows with the thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SearchModeDto>,
    /// Hits scoring below this are not recalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
}

/// A built-in memory processor, run in order on the recalled and recent
/// messages before packing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorDto {
    /// Removes tool calls and the tool messages answering them, together:
    /// of every tool when `tools` is empty or absent, else of those named.
    ToolCallFilter {
        /// Tool names (at most 64).
        #[serde(default)]
        #[schema(max_items = 64)]
        tools: Vec<String>,
    },
    /// Removes the messages of these roles (`user`, `assistant`, `tool`).
    RoleFilter {
        /// Roles removed (at most 64).
        #[schema(max_items = 64)]
        roles: Vec<RoleNameDto>,
    },
    /// Shortens messages over `max_chars` characters to their head and
    /// tail, with a marker between.
    Truncate {
        /// Longest content kept whole (64 to 1048576 characters).
        #[schema(minimum = 64, maximum = 1_048_576)]
        #[serde(deserialize_with = "whole")]
        max_chars: u32,
    },
    /// Removes a message equal to the one right before it.
    Dedupe,
    /// Replaces e-mail addresses, phone numbers and payment card numbers
    /// (Luhn-checked) with markers, and counts them.
    RedactPii,
}

/// A role a processor may filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleNameDto {
    /// Human or calling program.
    User,
    /// The model.
    Assistant,
    /// Tool results.
    Tool,
}

/// How an agent's contexts are assembled (`memory.context`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextOptionsDto {
    /// Which sections get the budget first: `working_memory`, `summary`,
    /// `recall`, `recent`, each at most once; those not named follow in
    /// that default order. The system prompt always comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 4)]
    pub priority: Option<Vec<PrioritySectionDto>>,
    /// Shares of the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<SharesDto>,
    /// Recall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<RecallDto>,
    /// Processors, in order (at most 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 16)]
    pub processors: Option<Vec<ProcessorDto>>,
}

fn priority(list: &[PrioritySectionDto]) -> Result<Priority, DomainError> {
    Priority::new(&list.iter().map(|s| Section::from(*s)).collect::<Vec<_>>())
}

fn shares(d: &SharesDto) -> Result<Shares, DomainError> {
    let mut s = Shares::default();
    for (section, p) in [
        (Section::WorkingMemory, d.working_memory),
        (Section::Summary, d.summary),
        (Section::Recall, d.recall),
        (Section::Recent, d.recent),
    ] {
        if let Some(p) = p {
            s = s.with(section, p)?;
        }
    }
    Ok(s)
}

fn recall(d: &RecallDto) -> RecallOptions {
    let window = d.window.unwrap_or_default();
    RecallOptions {
        disabled: d.enabled == Some(false),
        scope: match d.scope {
            Some(RecallScopeDto::Resource) => RecallScope::Resource,
            _ => RecallScope::Thread,
        },
        top_k: d.top_k,
        before: window.before.unwrap_or(0),
        after: window.after.unwrap_or(0),
        mode: d.mode.map_or(RecallOptions::default().mode, Into::into),
        min_score: d.min_score,
    }
}

fn processor(d: &ProcessorDto) -> ProcessorSpec {
    match d {
        ProcessorDto::ToolCallFilter { tools } => ProcessorSpec::ToolCallFilter { tools: tools.clone() },
        ProcessorDto::RoleFilter { roles } => ProcessorSpec::RoleFilter {
            roles: roles
                .iter()
                .map(|r| match r {
                    RoleNameDto::User => Role::User,
                    RoleNameDto::Assistant => Role::Assistant,
                    RoleNameDto::Tool => Role::Tool,
                })
                .collect(),
        },
        ProcessorDto::Truncate { max_chars } => ProcessorSpec::Truncate { max_chars: *max_chars },
        ProcessorDto::Dedupe => ProcessorSpec::Dedupe,
        ProcessorDto::RedactPii => ProcessorSpec::RedactPii,
    }
}

fn processors(list: &[ProcessorDto]) -> Result<Vec<ProcessorSpec>, DomainError> {
    if list.len() > memlayer_domain::MAX_PROCESSORS {
        return Err(DomainError::new(
            "processors",
            format!("{} given, at most {}", list.len(), memlayer_domain::MAX_PROCESSORS),
        ));
    }
    let specs: Vec<ProcessorSpec> = list.iter().map(processor).collect();
    specs.iter().try_for_each(ProcessorSpec::validate)?;
    Ok(specs)
}

impl TryFrom<&ContextOptionsDto> for ContextOptions {
    type Error = DomainError;
    fn try_from(d: &ContextOptionsDto) -> Result<Self, DomainError> {
        let opts = Self {
            priority: d.priority.as_deref().map(priority).transpose()?.unwrap_or_default(),
            shares: d.shares.as_ref().map(shares).transpose()?.unwrap_or_default(),
            recall: d.recall.as_ref().map(recall).unwrap_or_default(),
            processors: d.processors.as_deref().map(processors).transpose()?.unwrap_or_default(),
        };
        opts.validate()?;
        Ok(opts)
    }
}

impl From<&ContextOptions> for ContextOptionsDto {
    fn from(o: &ContextOptions) -> Self {
        let share = |s: Section| o.shares.get(s).map(u32::from);
        let r = &o.recall;
        Self {
            priority: Some(
                o.priority
                    .sections()
                    .iter()
                    .filter_map(|s| match s {
                        Section::WorkingMemory => Some(PrioritySectionDto::WorkingMemory),
                        Section::Summary => Some(PrioritySectionDto::Summary),
                        Section::Recall => Some(PrioritySectionDto::Recall),
                        Section::Recent => Some(PrioritySectionDto::Recent),
                        Section::System => None,
                    })
                    .collect(),
            ),
            shares: Some(SharesDto {
                working_memory: share(Section::WorkingMemory),
                summary: share(Section::Summary),
                recall: share(Section::Recall),
                recent: share(Section::Recent),
            }),
            recall: Some(RecallDto {
                enabled: Some(!r.disabled),
                scope: Some(match r.scope {
                    RecallScope::Thread => RecallScopeDto::Thread,
                    RecallScope::Resource => RecallScopeDto::Resource,
                }),
                top_k: r.top_k,
                window: Some(RecallWindowDto { before: Some(r.before), after: Some(r.after) }),
                mode: Some(r.mode.into()),
                min_score: r.min_score,
            }),
            processors: Some(
                o.processors
                    .iter()
                    .map(|p| match p {
                        ProcessorSpec::ToolCallFilter { tools } => {
                            ProcessorDto::ToolCallFilter { tools: tools.clone() }
                        }
                        ProcessorSpec::RoleFilter { roles } => ProcessorDto::RoleFilter {
                            roles: roles
                                .iter()
                                .filter_map(|r| match r {
                                    Role::User => Some(RoleNameDto::User),
                                    Role::Assistant => Some(RoleNameDto::Assistant),
                                    Role::Tool => Some(RoleNameDto::Tool),
                                    Role::System => None,
                                })
                                .collect(),
                        },
                        ProcessorSpec::Truncate { max_chars } => ProcessorDto::Truncate { max_chars: *max_chars },
                        ProcessorSpec::Dedupe => ProcessorDto::Dedupe,
                        ProcessorSpec::RedactPii => ProcessorDto::RedactPii,
                    })
                    .collect(),
            ),
        }
    }
}

/// Body of `POST /api/threads/{id}/context`; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextRequestDto {
    /// Model whose tokenizer and chat format count (default: the thread's,
    /// else its agent's). An unknown model is estimated, and the response
    /// says `exact: false`.
    #[schema(pattern = "^[!-~]+$", min_length = 1, max_length = 128)]
    pub model: Option<String>,
    /// Tokens for the whole prompt, 1 to 10000000 (default: the thread's
    /// `token_budget`, else the catalog model's context window minus its
    /// most output tokens).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 10_000_000)]
    pub budget: Option<serde_json::Number>,
    /// What recall searches for (default: the newest user message).
    #[schema(min_length = 1, max_length = 8192)]
    pub query: Option<String>,
    /// At least this many recent messages when they fit (1 to 1000; default
    /// the thread's `last_n`).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 1000)]
    pub last_n: Option<u32>,
    /// Replaces the agent's priority order (each section at most once).
    #[schema(max_items = 4)]
    pub priority: Option<Vec<PrioritySectionDto>>,
    /// Replaces the agent's shares.
    pub shares: Option<SharesDto>,
    /// Replaces the agent's recall options.
    pub recall: Option<RecallDto>,
    /// Replaces the agent's processors (at most 16).
    #[schema(max_items = 16)]
    pub processors: Option<Vec<ProcessorDto>>,
}

fn budget(n: &serde_json::Number) -> Result<Budget, DomainError> {
    match n.as_i64() {
        Some(i) => Budget::new(i),
        None => match n.as_f64() {
            #[allow(clippy::cast_possible_truncation, reason = "checked whole; an absurd one is named as such")]
            Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Budget::new(f as i64),
            _ => Err(DomainError::new(
                "budget",
                format!("must be a whole number of tokens between 1 and {MAX_BUDGET}, got {n}"),
            )),
        },
    }
}

impl TryFrom<ContextRequestDto> for ContextRequest {
    type Error = DomainError;
    fn try_from(d: ContextRequestDto) -> Result<Self, DomainError> {
        if let Some(n) = d.last_n
            && (n == 0 || n > memlayer_domain::MAX_PAGE_SIZE)
        {
            return Err(DomainError::new(
                "last_n",
                format!("must be between 1 and {}, got {n}", memlayer_domain::MAX_PAGE_SIZE),
            ));
        }
        if let Some(q) = &d.query
            && (q.trim().is_empty() || q.chars().count() > memlayer_domain::MAX_QUERY_CHARS)
        {
            return Err(DomainError::new(
                "query",
                format!("must be 1 to {} characters, not blank", memlayer_domain::MAX_QUERY_CHARS),
            ));
        }
        let recall = d.recall.as_ref().map(recall);
        if let Some(r) = &recall {
            ContextOptions { recall: *r, ..ContextOptions::default() }.validate()?;
        }
        Ok(Self {
            model: d.model.map(|m| memlayer_domain::parse_model(&m)).transpose()?,
            budget: d.budget.as_ref().map(budget).transpose()?,
            query: d.query,
            last_n: d.last_n,
            priority: d.priority.as_deref().map(priority).transpose()?,
            shares: d.shares.as_ref().map(shares).transpose()?,
            recall,
            processors: d.processors.as_deref().map(processors).transpose()?,
            custom_processors: Vec::new(),
        })
    }
}

/// A tool call as chat-completions APIs take it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextToolCallDto {
    /// The call id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function called.
    pub function: ContextFunctionDto,
}

/// A called function.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextFunctionDto {
    /// The tool's name.
    pub name: String,
    /// Its arguments as JSON text.
    pub arguments: String,
}

/// A message ready to send to a chat-completions API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextMessageDto {
    /// `system`, `user`, `assistant` or `tool`; recalled messages, the
    /// summary and working memory are `system`, marked by `name`.
    pub role: String,
    /// The text.
    pub content: String,
    /// `working_memory`, `summary`, `recall` (the marker before recalled
    /// messages), `recalled_user`, `recalled_assistant`, `recalled_tool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Calls of an assistant message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ContextToolCallDto>,
    /// The call a tool message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl From<&ContextMessage> for ContextMessageDto {
    fn from(m: &ContextMessage) -> Self {
        Self {
            role: m.role.as_str().to_owned(),
            content: m.content().to_owned(),
            name: m.name.clone(),
            tool_calls: m
                .tool_calls()
                .iter()
                .map(|c| ContextToolCallDto {
                    id: c.id.clone(),
                    kind: "function",
                    function: ContextFunctionDto { name: c.name.clone(), arguments: c.arguments.to_string() },
                })
                .collect(),
            tool_call_id: m.tool_call_id.clone(),
        }
    }
}

/// Tokens of a context.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextTokensDto {
    /// The whole prompt: every message's framing and text, and the reply's priming.
    pub total: u32,
    /// The system prompt.
    pub system: u32,
    /// Working memory.
    pub working_memory: u32,
    /// The summary.
    pub summary: u32,
    /// Recalled messages and their marker.
    pub recall: u32,
    /// Recent messages.
    pub recent: u32,
    /// The reply's priming.
    pub reply_priming: u32,
}

/// A stored message a section shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextSourceDto {
    /// Message id.
    pub id: String,
    /// Its thread.
    pub thread_id: String,
    /// Its sequence number.
    pub seq: i64,
    /// Its recall score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

impl From<&Source> for ContextSourceDto {
    fn from(s: &Source) -> Self {
        Self { id: s.message_id.to_string(), thread_id: s.thread_id.to_string(), seq: s.seq, score: s.score }
    }
}

/// What one section contributed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextSectionDto {
    /// The section.
    pub section: SectionDto,
    /// Its tokens.
    pub tokens: u32,
    /// The stored messages it shows, in the order sent.
    pub messages: Vec<ContextSourceDto>,
    /// Working memory's or the summary's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The last seq the summary covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covers_through: Option<i64>,
}

/// Something that did not make it into the context.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextDroppedDto {
    /// Its section.
    pub section: SectionDto,
    /// `budget`, `share`, `orphan_tool_result`, `last_n_unmet`,
    /// `recall_unavailable` or `no_query`.
    pub reason: &'static str,
    /// The stored messages concerned.
    pub messages: Vec<ContextSourceDto>,
    /// Their tokens, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// What happened.
    pub detail: String,
}

impl From<&Dropped> for ContextDroppedDto {
    fn from(d: &Dropped) -> Self {
        Self {
            section: d.section.into(),
            reason: d.reason,
            messages: d.messages.iter().map(Into::into).collect(),
            tokens: d.tokens,
            detail: d.detail.clone(),
        }
    }
}

/// What a processor did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextProcessorDto {
    /// Its kind.
    pub name: String,
    /// Candidate messages removed.
    pub removed: u32,
    /// Candidate messages changed.
    pub changed: u32,
    /// Items redacted, by kind (`email`, `phone`, `card`).
    #[schema(value_type = Object)]
    pub redacted: Value,
}

/// An assembled context.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextDto {
    /// The messages to send, in order.
    pub messages: Vec<ContextMessageDto>,
    /// Tokens, in all and per section.
    pub tokens: ContextTokensDto,
    /// What each section contributed.
    pub sections: Vec<ContextSectionDto>,
    /// What did not fit, and why.
    pub dropped: Vec<ContextDroppedDto>,
    /// `true` only when every count is the model's own tokenizer's and its
    /// chat format's framing is documented (no tool calls or results).
    pub exact: bool,
    /// The model counted for; `null` when none is known (all estimated).
    pub model: Option<String>,
    /// The tokenizer's encoding, or `estimate:chars/4`.
    pub encoding: String,
    /// The chat format: `openai-chat` or `estimate`.
    pub format: &'static str,
    /// The budget packed into.
    pub budget: u32,
    /// What the processors did, in order.
    pub processors: Vec<ContextProcessorDto>,
    /// The recall query used.
    pub query: Option<String>,
}

impl From<&AssembledContext> for ContextDto {
    fn from(c: &AssembledContext) -> Self {
        let t = c.tokens;
        Self {
            messages: c.messages.iter().map(Into::into).collect(),
            tokens: ContextTokensDto {
                total: t.total,
                system: t.system,
                working_memory: t.working_memory,
                summary: t.summary,
                recall: t.recall,
                recent: t.recent,
                reply_priming: t.reply_priming,
            },
            sections: c
                .sections
                .iter()
                .map(|s| ContextSectionDto {
                    section: s.section.into(),
                    tokens: s.tokens,
                    messages: s.messages.iter().map(Into::into).collect(),
                    version: s.version,
                    covers_through: s.covers_through,
                })
                .collect(),
            dropped: c.dropped.iter().map(Into::into).collect(),
            exact: c.exact,
            model: c.model.clone(),
            encoding: c.encoding.clone(),
            format: c.format,
            budget: c.budget,
            processors: c
                .processors
                .iter()
                .map(|p| ContextProcessorDto {
                    name: p.name.clone(),
                    removed: p.stats.removed,
                    changed: p.stats.changed,
                    redacted: serde_json::to_value(&p.stats.redacted).unwrap_or(Value::Null),
                })
                .collect(),
            query: c.query.clone(),
        }
    }
}

impl From<ContextError> for ApiError {
    fn from(e: ContextError) -> Self {
        match e {
            ContextError::Store(e) => e.into(),
            e @ ContextError::BudgetTooSmall { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "budget_too_small", e.to_string())
            }
            e @ ContextError::BudgetUnknown { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "budget_unknown", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "unexpected context error");
                Self::internal()
            }
        }
    }
}

/// What the derived schemas cannot say: each processor variant takes no
/// other field, a priority names each section once, a query is not blank,
/// tool names are not empty. Called by `openapi::complete`.
pub(crate) fn complete_schemas(schemas: &mut serde_json::Map<String, Value>) {
    if let Some(variants) =
        schemas.get_mut("ProcessorDto").and_then(|s| s.get_mut("oneOf")).and_then(Value::as_array_mut)
    {
        for v in variants.iter_mut() {
            v["additionalProperties"] = Value::Bool(false);
            if let Some(items) = v.pointer_mut("/properties/tools/items") {
                *items = serde_json::json!({"type": "string", "minLength": 1, "maxLength": 64});
            }
        }
    }
    for dto in ["ContextRequestDto", "ContextOptionsDto"] {
        if let Some(priority) = schemas.get_mut(dto).and_then(|s| s.pointer_mut("/properties/priority")) {
            priority["uniqueItems"] = Value::Bool(true);
        }
    }
    if let Some(query) = schemas.get_mut("ContextRequestDto").and_then(|s| s.pointer_mut("/properties/query")) {
        query["pattern"] = Value::String("\\S".into());
    }
}

/// Assemble the context of a thread's next model call: system prompt,
/// working memory, summary, recalled messages and as many recent messages
/// as fit the budget, counted by the model's tokenizer (an unknown model is
/// estimated and `exact` is `false`).
///
/// The response says what each section contributed (`sections`), what did
/// not fit and why (`dropped`), and the tokens of each. A caller bound to a
/// resource gets 404 for another resource's thread, and recall over its
/// resource only.
#[utoipa::path(post, path = "/api/threads/{id}/context", security(("bearer" = ["read"])), tag = "context",
    params(("id" = String, Path, description = "Thread id"), ("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body = ContextRequestDto,
    responses((status = 200, body = ContextDto),
              (status = 400, body = ErrorBody, description = "Invalid request (a budget out of 1 to 10000000 names the limit)"),
              (status = 404, body = ErrorBody, description = "`not_found`: no such thread for this caller"),
              (status = 422, body = ErrorBody, description = "`budget_too_small`: the budget cannot hold the system prompt, the message names the minimum; `budget_unknown`: no budget given and none found (no `token_budget`, no catalog model of that name): pass `budget`"),
              (status = 503, body = ErrorBody, description = "`unavailable`: the store is unreachable or busy; `timeout`, `overloaded`: retry later")))]
async fn assemble_context(
    State(s): State<AppState>,
    Read(who): Read,
    Path(id): Path<String>,
    Json(body): Json<ContextRequestDto>,
) -> Result<Json<ContextDto>, ApiError> {
    let id: ThreadId = id.parse()?;
    let request = ContextRequest::try_from(body)?;
    let context = s.context.assemble(&who, id, request).await?;
    Ok(Json(ContextDto::from(&context)))
}
