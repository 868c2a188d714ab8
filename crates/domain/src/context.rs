//! Context assembly's pure rules: the [`Section`]s of a prompt, the options
//! that order and share them ([`ContextOptions`]), the chat formats' token
//! overhead ([`ChatFormat`]), how a thread's newest messages split into
//! units that are kept or dropped whole ([`segment_recent`]), and the
//! packing itself ([`pack`]), which never exceeds the budget.
//!
//! Everything here is a function of its inputs: the same inputs give the
//! same plan, and no clock, random number or hash order enters it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::{DomainError, Role, SearchMode, ThreadId};

/// The largest budget a request or an agent may give, in tokens (the same
/// bound as an agent's `token_budget`).
pub const MAX_BUDGET: u32 = 10_000_000;

/// A part of an assembled prompt. In the prompt they come in this order;
/// which ones get the budget first is the [`Priority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// The agent's system prompt: never dropped.
    System,
    /// The working-memory document (what is known about the user).
    WorkingMemory,
    /// The thread's summary.
    Summary,
    /// Messages recalled by a search (older ones of this thread, other
    /// threads of its resource).
    Recall,
    /// The thread's newest messages.
    Recent,
}

impl Section {
    /// Every section, in prompt order.
    pub const ALL: [Section; 5] =
        [Section::System, Section::WorkingMemory, Section::Summary, Section::Recall, Section::Recent];

    /// The sections that may be dropped, in the default priority order.
    pub const DROPPABLE: [Section; 4] = [Section::WorkingMemory, Section::Summary, Section::Recall, Section::Recent];

    /// The name used in requests and responses.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::WorkingMemory => "working_memory",
            Self::Summary => "summary",
            Self::Recall => "recall",
            Self::Recent => "recent",
        }
    }

    /// Parses a name.
    ///
    /// # Errors
    /// [`DomainError`] on `field` for an unknown name.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            DomainError::new(
                field,
                format!(
                    "unknown section `{}`; expected working_memory, summary, recall or recent",
                    crate::ids::truncate(s)
                ),
            )
        })
    }

    /// Whether the section belongs to the prompt's stable prefix (system
    /// prompt, working memory, summary), which providers cache.
    #[must_use]
    pub const fn is_prefix(self) -> bool {
        matches!(self, Self::System | Self::WorkingMemory | Self::Summary)
    }

    fn slot(self) -> usize {
        match self {
            Self::System => 4,
            Self::WorkingMemory => 0,
            Self::Summary => 1,
            Self::Recall => 2,
            Self::Recent => 3,
        }
    }
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated budget: 1 to [`MAX_BUDGET`] tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(u32);

impl Budget {
    /// Validates a budget given by a caller (any integer, so a negative one
    /// is named as such).
    ///
    /// # Errors
    /// [`DomainError`] on `budget` naming the limit.
    pub fn new(tokens: i64) -> Result<Self, DomainError> {
        match u32::try_from(tokens) {
            Ok(t) if (1..=MAX_BUDGET).contains(&t) => Ok(Self(t)),
            _ => Err(DomainError::new("budget", format!("must be between 1 and {MAX_BUDGET} tokens, got {tokens}"))),
        }
    }

    /// The tokens.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Which droppable sections get the budget first: a permutation of
/// [`Section::DROPPABLE`]. The system prompt always comes before all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority([Section; 4]);

impl Default for Priority {
    /// Working memory, summary, recall, recent: the stable prefix first (so
    /// its presence never depends on the conversation), then recall (bounded
    /// by `top_k`), then as many recent messages as the rest holds.
    fn default() -> Self {
        Self(Section::DROPPABLE)
    }
}

impl Priority {
    /// Validates an order: each droppable section at most once; the ones
    /// not named follow in their default order.
    ///
    /// # Errors
    /// [`DomainError`] on `priority` for `system`, a repeat, or an unknown name.
    pub fn new(order: &[Section]) -> Result<Self, DomainError> {
        let mut out: Vec<Section> = Vec::with_capacity(4);
        for &s in order {
            if s == Section::System {
                return Err(DomainError::new("priority", "`system` is always first and cannot be ordered"));
            }
            if out.contains(&s) {
                return Err(DomainError::new("priority", format!("`{s}` is listed twice")));
            }
            out.push(s);
        }
        for s in Section::DROPPABLE {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        let mut arr = Section::DROPPABLE;
        arr.copy_from_slice(&out);
        Ok(Self(arr))
    }

    /// The order.
    #[must_use]
    pub fn sections(&self) -> &[Section; 4] {
        &self.0
    }

    /// Whether working memory and summary both rank above recall and
    /// recent: then the prefix depends on nothing but itself.
    #[must_use]
    pub fn prefix_first(&self) -> bool {
        self.0[..2].iter().all(|s| s.is_prefix())
    }
}

/// Per-section shares of the budget, in percent (1 to 100).
///
/// A share caps what a section takes while the sections after it in
/// priority still want room. Working memory's and summary's are hard caps
/// (their presence must not depend on the conversation); recall's and
/// recent's are soft: the budget left once every section had its turn goes
/// back to them, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shares([Option<u8>; 4]);

impl Shares {
    /// Sets the share of `section`.
    ///
    /// # Errors
    /// [`DomainError`] on `shares` for the system prompt (it always takes
    /// what it needs) or a percentage outside 1 to 100.
    pub fn with(mut self, section: Section, percent: u32) -> Result<Self, DomainError> {
        if section == Section::System {
            return Err(DomainError::new("shares", "the system prompt takes what it needs and has no share"));
        }
        match u8::try_from(percent) {
            Ok(p) if (1..=100).contains(&p) => {
                self.0[section.slot()] = Some(p);
                Ok(self)
            }
            _ => Err(DomainError::new(
                "shares",
                format!("`{section}` must be a percentage between 1 and 100, got {percent}"),
            )),
        }
    }

    /// The share of `section`, if set.
    #[must_use]
    pub fn get(&self, section: Section) -> Option<u8> {
        if section == Section::System { None } else { self.0[section.slot()] }
    }

    /// The most `section` takes in the first pass of a `budget`.
    #[must_use]
    pub fn cap(&self, section: Section, budget: u32) -> u32 {
        self.get(section)
            .map_or(u32::MAX, |p| u32::try_from(u64::from(budget) * u64::from(p) / 100).unwrap_or(u32::MAX))
    }
}

/// Where recall searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecallScope {
    /// The thread's older messages only.
    #[default]
    Thread,
    /// The thread's older messages and its resource's other threads.
    Resource,
}

impl RecallScope {
    /// The name used in requests.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Thread => "thread",
            Self::Resource => "resource",
        }
    }
}

/// How recall searches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallOptions {
    /// `false` switches recall off.
    pub disabled: bool,
    /// Where to search.
    pub scope: RecallScope,
    /// Hits to recall (1 to [`crate::MAX_TOP_K`]); `None`: the thread's
    /// `top_k` memory option, else the search default.
    pub top_k: Option<u32>,
    /// Neighbours before each hit (0 to [`crate::MAX_WINDOW`]).
    pub before: u32,
    /// Neighbours after each hit (0 to [`crate::MAX_WINDOW`]).
    pub after: u32,
    /// How the search ranks: by meaning (`vector`) by default, since a
    /// thread's lexical ranking (BM25 over every message) grows with its
    /// length; `hybrid` adds it.
    pub mode: SearchMode,
    /// Hits scoring below this are not recalled.
    pub min_score: Option<f32>,
}

impl Default for RecallOptions {
    fn default() -> Self {
        Self {
            disabled: false,
            scope: RecallScope::Thread,
            top_k: None,
            before: 0,
            after: 0,
            mode: SearchMode::Vector,
            min_score: None,
        }
    }
}

/// A built-in memory processor, as an agent or a request names it. They run
/// in the order given, on the recalled and recent messages, before packing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorSpec {
    /// Removes tool calls and the tool messages answering them, together:
    /// of every tool when `tools` is empty, else of the tools named.
    ToolCallFilter {
        /// Tool names; empty for all.
        tools: Vec<String>,
    },
    /// Removes the messages of these roles.
    RoleFilter {
        /// Roles removed.
        roles: Vec<Role>,
    },
    /// Shortens messages longer than `max_chars` characters, keeping their
    /// head and tail with a marker between.
    Truncate {
        /// Longest content kept whole, in characters (at least 64).
        max_chars: u32,
    },
    /// Removes a message equal to the one right before it (same role,
    /// content and tool fields).
    Dedupe,
    /// Replaces e-mail addresses, phone numbers and payment card numbers
    /// (Luhn-checked) with markers, counting them.
    RedactPii,
}

/// Most processors one context may run.
pub const MAX_PROCESSORS: usize = 16;
/// Most tool names or roles one processor may list.
pub const MAX_PROCESSOR_ITEMS: usize = 64;

impl ProcessorSpec {
    /// Its name in requests and reports.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ToolCallFilter { .. } => "tool_call_filter",
            Self::RoleFilter { .. } => "role_filter",
            Self::Truncate { .. } => "truncate",
            Self::Dedupe => "dedupe",
            Self::RedactPii => "redact_pii",
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`DomainError`] on `processors`.
    pub fn validate(&self) -> Result<(), DomainError> {
        let too_many = |n: usize| {
            (n > MAX_PROCESSOR_ITEMS).then(|| {
                DomainError::new(
                    "processors",
                    format!("{} lists {n} items, at most {MAX_PROCESSOR_ITEMS}", self.kind()),
                )
            })
        };
        match self {
            Self::ToolCallFilter { tools } => {
                if let Some(e) = too_many(tools.len()) {
                    return Err(e);
                }
                if tools.iter().any(|t| t.is_empty() || t.len() > 256) {
                    return Err(DomainError::new("processors", "tool_call_filter: tool names are 1 to 256 bytes"));
                }
                for t in tools {
                    crate::no_nul("processors", t)?;
                }
            }
            Self::RoleFilter { roles } => {
                if let Some(e) = too_many(roles.len()) {
                    return Err(e);
                }
                if roles.contains(&Role::System) {
                    return Err(DomainError::new(
                        "processors",
                        "role_filter: `system` cannot be filtered (recalled material is marked with it)",
                    ));
                }
            }
            Self::Truncate { max_chars } => {
                if *max_chars < 64 || *max_chars > crate::MAX_CONTENT_BYTES as u32 {
                    return Err(DomainError::new(
                        "processors",
                        format!("truncate: max_chars must be between 64 and {}", crate::MAX_CONTENT_BYTES),
                    ));
                }
            }
            Self::Dedupe | Self::RedactPii => {}
        }
        Ok(())
    }

    fn to_value(&self) -> Value {
        match self {
            Self::ToolCallFilter { tools } => json!({"kind": self.kind(), "tools": tools}),
            Self::RoleFilter { roles } => {
                json!({"kind": self.kind(), "roles": roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()})
            }
            Self::Truncate { max_chars } => json!({"kind": self.kind(), "max_chars": max_chars}),
            Self::Dedupe | Self::RedactPii => json!({"kind": self.kind()}),
        }
    }

    fn from_value(v: &Value) -> Result<Self, DomainError> {
        let bad = |m: String| DomainError::new("processors", m);
        let o = v.as_object().ok_or_else(|| bad("each processor is an object with a `kind`".into()))?;
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
        let strings = |key: &str| -> Result<Vec<String>, DomainError> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| bad(format!("{kind}: {key} are strings"))))
                    .collect(),
                Some(_) => Err(bad(format!("{kind}: {key} must be an array"))),
            }
        };
        let spec = match kind {
            "tool_call_filter" => Self::ToolCallFilter { tools: strings("tools")? },
            "role_filter" => Self::RoleFilter {
                roles: strings("roles")?
                    .iter()
                    .map(|r| r.parse::<Role>().map_err(|e| bad(format!("role_filter: {}", e.reason))))
                    .collect::<Result<_, _>>()?,
            },
            "truncate" => Self::Truncate {
                max_chars: o
                    .get("max_chars")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("truncate: max_chars is a whole number".into()))?,
            },
            "dedupe" => Self::Dedupe,
            "redact_pii" => Self::RedactPii,
            other => {
                return Err(bad(format!(
                    "unknown kind `{}`; expected tool_call_filter, role_filter, truncate, dedupe or redact_pii",
                    crate::ids::truncate(other)
                )));
            }
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// How an agent's contexts are assembled: [`MemoryOptions::context`](crate::MemoryOptions::context).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContextOptions {
    /// Which sections get the budget first.
    pub priority: Priority,
    /// Per-section shares.
    pub shares: Shares,
    /// Recall's search.
    pub recall: RecallOptions,
    /// Processors, in order.
    pub processors: Vec<ProcessorSpec>,
}

/// The version of [`ContextOptions::to_value`]'s JSON.
const OPTIONS_VERSION: u64 = 1;

impl ContextOptions {
    /// Checks every part.
    ///
    /// # Errors
    /// [`DomainError`] naming the part.
    pub fn validate(&self) -> Result<(), DomainError> {
        let r = &self.recall;
        if let Some(k) = r.top_k {
            crate::TopK::new(k).map_err(|e| DomainError::new("recall.top_k", e.reason))?;
        }
        crate::Window::new(r.before, r.after).map_err(|e| DomainError::new("recall.window", e.reason))?;
        if r.min_score.is_some_and(|s| !s.is_finite()) {
            return Err(DomainError::new("recall.min_score", "must be a finite number"));
        }
        if self.processors.len() > MAX_PROCESSORS {
            return Err(DomainError::new("processors", format!("at most {MAX_PROCESSORS} processors")));
        }
        self.processors.iter().try_for_each(ProcessorSpec::validate)
    }

    /// The JSON stored for an agent and copied into threads (versioned).
    #[must_use]
    pub fn to_value(&self) -> Value {
        let mut shares = Map::new();
        for s in Section::DROPPABLE {
            if let Some(p) = self.shares.get(s) {
                shares.insert(s.as_str().to_owned(), Value::from(p));
            }
        }
        let r = &self.recall;
        let mut recall = Map::new();
        recall.insert("enabled".into(), Value::Bool(!r.disabled));
        recall.insert("scope".into(), Value::from(r.scope.as_str()));
        if let Some(k) = r.top_k {
            recall.insert("top_k".into(), Value::from(k));
        }
        recall.insert("window".into(), json!({"before": r.before, "after": r.after}));
        recall.insert("mode".into(), Value::from(r.mode.as_str()));
        if let Some(m) = r.min_score {
            recall.insert("min_score".into(), Value::from(f64::from(m)));
        }
        json!({
            "v": OPTIONS_VERSION,
            "priority": self.priority.sections().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "shares": shares,
            "recall": recall,
            "processors": self.processors.iter().map(ProcessorSpec::to_value).collect::<Vec<_>>(),
        })
    }

    /// Reads [`ContextOptions::to_value`]'s JSON (absent parts take their
    /// defaults).
    ///
    /// # Errors
    /// [`DomainError`] naming the first unacceptable part.
    pub fn from_value(v: &Value) -> Result<Self, DomainError> {
        let o = v.as_object().ok_or_else(|| DomainError::new("context", "must be an object"))?;
        if let Some(version) = o.get("v").and_then(Value::as_u64)
            && version != OPTIONS_VERSION
        {
            return Err(DomainError::new("context", format!("version {version} is not known")));
        }
        let mut out = Self::default();
        if let Some(p) = o.get("priority").filter(|p| !p.is_null()) {
            let list = p.as_array().ok_or_else(|| DomainError::new("priority", "must be an array"))?;
            let names: Vec<Section> = list
                .iter()
                .map(|x| Section::parse("priority", x.as_str().unwrap_or_default()))
                .collect::<Result<_, _>>()?;
            out.priority = Priority::new(&names)?;
        }
        if let Some(s) = o.get("shares").filter(|s| !s.is_null()) {
            let map = s.as_object().ok_or_else(|| DomainError::new("shares", "must be an object"))?;
            for (k, v) in map {
                let section = Section::parse("shares", k)?;
                let p = v.as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
                out.shares = out.shares.with(section, p)?;
            }
        }
        if let Some(r) = o.get("recall").filter(|r| !r.is_null()) {
            let r = r.as_object().ok_or_else(|| DomainError::new("recall", "must be an object"))?;
            let rec = &mut out.recall;
            rec.disabled = r.get("enabled").and_then(Value::as_bool).is_some_and(|e| !e);
            rec.scope = match r.get("scope").and_then(Value::as_str) {
                None | Some("thread") => RecallScope::Thread,
                Some("resource") => RecallScope::Resource,
                Some(_) => return Err(DomainError::new("recall.scope", "must be `thread` or `resource`")),
            };
            rec.top_k = r.get("top_k").and_then(Value::as_u64).map(|k| u32::try_from(k).unwrap_or(u32::MAX));
            if let Some(w) = r.get("window").and_then(Value::as_object) {
                let side =
                    |k: &str| w.get(k).and_then(Value::as_u64).map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
                rec.before = side("before");
                rec.after = side("after");
            }
            if let Some(m) = r.get("mode").and_then(Value::as_str) {
                rec.mode = m.parse().map_err(|e: DomainError| DomainError::new("recall.mode", e.reason))?;
            }
            #[allow(clippy::cast_possible_truncation, reason = "a score; f32 is what search compares")]
            {
                rec.min_score = r.get("min_score").and_then(Value::as_f64).map(|s| s as f32);
            }
        }
        if let Some(p) = o.get("processors").filter(|p| !p.is_null()) {
            let list = p.as_array().ok_or_else(|| DomainError::new("processors", "must be an array"))?;
            out.processors = list.iter().map(ProcessorSpec::from_value).collect::<Result<_, _>>()?;
        }
        out.validate()?;
        Ok(out)
    }
}

/// How a chat format frames messages, in tokens, for one tokenizer family:
/// what a prompt costs beyond its texts.
///
/// - OpenAI chat models (`o200k_base`, `cl100k_base`), after OpenAI's
///   cookbook "How to count tokens with tiktoken" (`num_tokens_from_messages`):
///   every message costs 3 tokens of framing plus its role (1 token for
///   `system`, `user`, `assistant` and `tool` in both encodings), a `name`
///   costs 1 token plus its text, and every reply is primed with 3 tokens.
///   These are exact for messages of text. How tool calls and tool results
///   are framed is not documented: memlayer counts a call's name and JSON
///   arguments and adds 8 tokens per call and per tool result, and a
///   context carrying any is not called exact.
/// - Any other encoding (an estimate): 8 tokens per message, 8 per name, 16
///   per tool call or result and 8 for the reply, and every text's estimate
///   is raised by a 25% safety margin. Never exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatFormat {
    /// `openai-chat` or `estimate`.
    pub family: &'static str,
    /// Framing and role of every message.
    pub per_message: u32,
    /// Extra tokens of a `name` besides its text.
    pub per_name: u32,
    /// Margin per tool call and per tool result (their framing is not documented).
    pub per_tool: u32,
    /// The reply's priming.
    pub reply_priming: u32,
    /// Raise on every counted text, in percent.
    pub margin_percent: u32,
    /// Whether the framing above is the model's own (documented).
    pub exact: bool,
}

impl ChatFormat {
    /// OpenAI's chat format (see the type's doc).
    pub const OPENAI: Self = Self {
        family: "openai-chat",
        per_message: 4,
        per_name: 1,
        per_tool: 8,
        reply_priming: 3,
        margin_percent: 0,
        exact: true,
    };

    /// The declared estimate for other models (see the type's doc).
    pub const ESTIMATE: Self = Self {
        family: "estimate",
        per_message: 8,
        per_name: 8,
        per_tool: 16,
        reply_priming: 8,
        margin_percent: 25,
        exact: false,
    };

    /// The format of a tokenizer's encoding: OpenAI's for its encodings
    /// counted exactly, the estimate otherwise.
    #[must_use]
    pub fn for_encoding(encoding: &str, exact_counts: bool) -> Self {
        match encoding {
            "o200k_base" | "cl100k_base" if exact_counts => Self::OPENAI,
            _ => Self::ESTIMATE,
        }
    }

    /// A counted text's tokens with the format's margin.
    #[must_use]
    pub fn text(&self, counted: u32) -> u32 {
        if self.margin_percent == 0 {
            return counted;
        }
        let raised = (u64::from(counted) * u64::from(100 + self.margin_percent)).div_ceil(100);
        u32::try_from(raised).unwrap_or(u32::MAX)
    }

    /// A whole message's tokens: framing, its content's counted tokens, a
    /// name's counted tokens, and `tools` tool calls or results.
    #[must_use]
    pub fn message(&self, content: u32, name: Option<u32>, tools: usize) -> u32 {
        let name = name.map_or(0, |n| self.per_name.saturating_add(self.text(n)));
        let tools = u32::try_from(tools).unwrap_or(u32::MAX).saturating_mul(self.per_tool);
        self.per_message.saturating_add(self.text(content)).saturating_add(name).saturating_add(tools)
    }
}

/// How a recent message takes part in a tool exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Not part of one: a user, system or plain assistant message.
    Plain,
    /// An assistant message calling tools (their call ids).
    Calls(Vec<String>),
    /// A tool message answering a call id.
    Result(String),
}

impl Shape {
    /// The shape of a message with this role and tool fields.
    #[must_use]
    pub fn of(role: Role, tool_call_ids: impl IntoIterator<Item = String>, answers: Option<&str>) -> Self {
        match role {
            Role::Assistant => {
                let ids: Vec<String> = tool_call_ids.into_iter().collect();
                if ids.is_empty() { Self::Plain } else { Self::Calls(ids) }
            }
            Role::Tool => Self::Result(answers.unwrap_or_default().to_owned()),
            Role::User | Role::System => Self::Plain,
        }
    }
}

/// A run of recent messages kept or dropped whole: one message, or an
/// assistant message with tool calls together with the tool messages
/// answering them (and anything between them that a cut could not
/// separate). Indices are into the newest-first list given to
/// [`segment_recent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Newest-first indices of its messages (orphans left out).
    pub items: Vec<usize>,
    /// Their tokens together.
    pub cost: u32,
}

/// What [`segment_recent`] made of a thread's newest messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segments {
    /// Units, newest first; between two of them a cut leaves every tool
    /// exchange whole.
    pub units: Vec<Unit>,
    /// Tool messages answering no call of the assistant messages right
    /// before them (their call was deleted): never sent, since a provider
    /// refuses a tool result without its call.
    pub orphans: Vec<usize>,
    /// The oldest messages given form an exchange whose call may lie
    /// further back: read more before deciding on them.
    pub open: bool,
}

/// Splits `items` (a thread's newest messages, newest first, each with its
/// token cost) into [`Units`](Unit).
///
/// A tool message belongs with the nearest older assistant message calling
/// its id, searched back through the contiguous run of tool-exchange
/// messages (tool messages and assistant messages with calls); a plain
/// message ends the run, and a tool message whose call was not found in its
/// run is an orphan. A cut between two messages is allowed when every tool
/// message newer than it has its call newer than it too. With `complete`
/// (the thread has no older messages than the last given) a run still open
/// at the end is closed as if by a plain message; otherwise it is left out
/// and `open` is set.
#[must_use]
pub fn segment_recent(items: &[(u32, Shape)], complete: bool) -> Segments {
    let mut out = Segments::default();
    let mut run_start = 0;
    let mut open: BTreeSet<&str> = BTreeSet::new();
    for (i, (_, shape)) in items.iter().enumerate() {
        match shape {
            Shape::Result(id) => {
                open.insert(id.as_str());
            }
            Shape::Calls(ids) => {
                for id in ids {
                    open.remove(id.as_str());
                }
                if open.is_empty() {
                    close_run(items, run_start, i + 1, &BTreeSet::new(), &mut out);
                    run_start = i + 1;
                }
            }
            Shape::Plain => {
                // Whatever is still open before this message answers
                // nothing: orphans. The run ends; the plain message is a unit.
                let orphans: BTreeSet<String> = open.iter().map(|s| (*s).to_owned()).collect();
                close_run(items, run_start, i, &orphans, &mut out);
                open.clear();
                out.units.push(Unit { items: vec![i], cost: items[i].0 });
                run_start = i + 1;
            }
        }
    }
    if run_start < items.len() {
        if complete {
            let orphans: BTreeSet<String> = open.iter().map(|s| (*s).to_owned()).collect();
            close_run(items, run_start, items.len(), &orphans, &mut out);
        } else {
            out.open = true;
        }
    }
    out
}

/// Splits the closed run `items[from..to]` into units, leaving out the tool
/// messages answering `orphans`.
fn close_run(items: &[(u32, Shape)], from: usize, to: usize, orphans: &BTreeSet<String>, out: &mut Segments) {
    let mut open: BTreeSet<&str> = BTreeSet::new();
    let mut unit = Unit { items: Vec::new(), cost: 0 };
    for (i, (cost, shape)) in items.iter().enumerate().take(to).skip(from) {
        match shape {
            Shape::Result(id) if orphans.contains(id) => {
                out.orphans.push(i);
                continue;
            }
            Shape::Result(id) => {
                open.insert(id.as_str());
            }
            Shape::Calls(ids) => {
                for id in ids {
                    open.remove(id.as_str());
                }
            }
            Shape::Plain => {}
        }
        unit.items.push(i);
        unit.cost = unit.cost.saturating_add(*cost);
        if open.is_empty() {
            out.units.push(std::mem::replace(&mut unit, Unit { items: Vec::new(), cost: 0 }));
        }
    }
    if !unit.items.is_empty() {
        out.units.push(unit);
    }
}

/// What [`pack`] is asked to fit: every candidate's cost in tokens, the
/// per-message framing already included.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackInput {
    /// The whole prompt's budget.
    pub budget: u32,
    /// The reply's priming ([`ChatFormat::reply_priming`]).
    pub reply_priming: u32,
    /// The system prompt's cost (0 when there is none).
    pub system: u32,
    /// Working memory's cost, when there is a document.
    pub working_memory: Option<u32>,
    /// The summary's cost, when there is one.
    pub summary: Option<u32>,
    /// Recall groups' costs, most relevant first.
    pub recall: Vec<u32>,
    /// What the first recall group taken costs besides itself (the marker
    /// message introducing recalled material).
    pub recall_header: u32,
    /// Recent units' costs and message counts, newest first.
    pub recent: Vec<(u32, u32)>,
    /// At least this many recent messages when they fit.
    pub last_n: Option<u32>,
    /// Which sections get the budget first.
    pub priority: Priority,
    /// Their shares.
    pub shares: Shares,
}

/// Why a candidate is not in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not enough budget was left.
    Budget,
    /// It would have taken its section past its share.
    Share,
}

impl DropReason {
    /// Its name in responses.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Budget => "budget",
            Self::Share => "share",
        }
    }
}

/// What [`pack`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The system prompt's cost.
    pub system: u32,
    /// Working memory kept, or why not.
    pub working_memory: Option<Result<u32, DropReason>>,
    /// Summary kept, or why not.
    pub summary: Option<Result<u32, DropReason>>,
    /// Recall groups kept (indices, most relevant first).
    pub recall: Vec<usize>,
    /// Recall groups left out, and why.
    pub recall_dropped: Vec<(usize, DropReason)>,
    /// Tokens of recall, its marker included.
    pub recall_tokens: u32,
    /// Newest recent units kept.
    pub recent_units: usize,
    /// Messages in them.
    pub recent_messages: u32,
    /// Tokens of recent.
    pub recent_tokens: u32,
    /// Why the next older recent unit was left out, if one was.
    pub recent_stop: Option<DropReason>,
    /// `last_n` was set and fewer messages fit.
    pub last_n_unmet: bool,
    /// The whole prompt: every section, framing and the reply's priming.
    pub total: u32,
}

/// The budget cannot hold the system prompt (and the reply's priming):
/// `minimum` tokens would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall {
    /// The smallest budget that holds them.
    pub minimum: u32,
}

/// Fits a context into its budget.
///
/// Rules:
/// - the system prompt (and the reply's priming) always fit, or the result
///   is [`TooSmall`] naming the minimum;
/// - sections take the budget in [`Priority`] order, each at most its
///   share while sections after it may still want room; then, in priority
///   order again, recall and recent take what is left beyond their shares
///   (working memory's and summary's shares are hard caps);
/// - working memory and summary are single items, kept whole or not;
/// - recall groups are taken most relevant first, a group that does not fit
///   is skipped and smaller ones after it may still be taken;
/// - recent units are taken newest first and never with a gap: the first
///   that does not fit ends the section;
/// - with `last_n`, the newest units holding at least `last_n` messages are
///   set aside before any section ranked above recent, except working memory
///   and summary (the prompt's prefix must not depend on the conversation);
///   when they do not fit, recent keeps the newest units that do and
///   `last_n_unmet` says so;
/// - the total never exceeds the budget.
///
/// # Errors
/// [`TooSmall`] when the budget cannot hold the system prompt.
pub fn pack(input: &PackInput) -> Result<Plan, TooSmall> {
    let fixed = input.system.saturating_add(input.reply_priming);
    if fixed > input.budget {
        return Err(TooSmall { minimum: fixed });
    }
    let budget = input.budget;
    let mut left = budget - fixed;
    let mut plan = Plan { system: input.system, ..Plan::default() };
    let mut recall_taken = vec![false; input.recall.len()];
    let mut recall_tokens: u32 = 0;
    let mut recent_taken: usize = 0;
    let mut recent_tokens: u32 = 0;

    // The newest units holding at least `last_n` messages.
    let reserve_cost = |units: &[(u32, u32)]| -> Option<u32> {
        let n = input.last_n?;
        let mut cost = 0u32;
        let mut messages = 0u32;
        for &(c, m) in units {
            if messages >= n {
                break;
            }
            cost = cost.saturating_add(c);
            messages = messages.saturating_add(m);
        }
        Some(cost)
    };
    let recent_ranks_after = |s: Section| {
        let order = input.priority.sections();
        let pos = |x: Section| order.iter().position(|o| *o == x).unwrap_or(0);
        pos(s) < pos(Section::Recent)
    };

    for &section in input.priority.sections() {
        let cap = input.shares.cap(section, budget);
        // What must stay free for recent's `last_n` while a tail section
        // ranked above recent packs.
        let reserved = if section == Section::Recall && recent_ranks_after(section) {
            reserve_cost(&input.recent).unwrap_or(0).min(left)
        } else {
            0
        };
        let room = left.saturating_sub(reserved);
        match section {
            Section::WorkingMemory | Section::Summary => {
                let item = if section == Section::WorkingMemory { input.working_memory } else { input.summary };
                let Some(cost) = item else { continue };
                let decision = if cost > cap {
                    Err(DropReason::Share)
                } else if cost > room {
                    Err(DropReason::Budget)
                } else {
                    left -= cost;
                    Ok(cost)
                };
                if section == Section::WorkingMemory {
                    plan.working_memory = Some(decision);
                } else {
                    plan.summary = Some(decision);
                }
            }
            Section::Recall => {
                let mut used = 0u32;
                for (i, &cost) in input.recall.iter().enumerate() {
                    let header = if recall_tokens == 0 && used == 0 { input.recall_header } else { 0 };
                    let need = cost.saturating_add(header);
                    if used.saturating_add(need) > cap.min(room) {
                        continue;
                    }
                    used += need;
                    recall_taken[i] = true;
                }
                left -= used;
                recall_tokens = used;
            }
            Section::Recent => {
                let mut used = 0u32;
                let mut messages = 0u32;
                for &(cost, m) in &input.recent {
                    let within_min = input.last_n.is_some_and(|n| messages < n);
                    let limit = if within_min { left } else { cap.min(left) };
                    if used.saturating_add(cost) > limit {
                        break;
                    }
                    used += cost;
                    messages += m;
                    recent_taken += 1;
                }
                left -= used;
                recent_tokens = used;
            }
            Section::System => {}
        }
    }

    // Second pass: recall and recent take what is left, in priority order.
    for &section in input.priority.sections() {
        match section {
            Section::Recall => {
                for (i, &cost) in input.recall.iter().enumerate() {
                    if recall_taken[i] {
                        continue;
                    }
                    let header = if recall_tokens == 0 { input.recall_header } else { 0 };
                    let need = cost.saturating_add(header);
                    if need <= left {
                        left -= need;
                        recall_tokens += need;
                        recall_taken[i] = true;
                    }
                }
            }
            Section::Recent => {
                while let Some(&(cost, _)) = input.recent.get(recent_taken) {
                    if cost > left {
                        break;
                    }
                    left -= cost;
                    recent_tokens += cost;
                    recent_taken += 1;
                }
            }
            _ => {}
        }
    }

    // Soft shares gave back what was left: whatever recall and recent
    // still lack did not fit the budget.
    for (i, taken) in recall_taken.iter().enumerate() {
        if *taken {
            plan.recall.push(i);
        } else {
            plan.recall_dropped.push((i, DropReason::Budget));
        }
    }
    plan.recall_tokens = recall_tokens;
    plan.recent_units = recent_taken;
    plan.recent_tokens = recent_tokens;
    plan.recent_messages = input.recent[..recent_taken].iter().map(|u| u.1).sum();
    if recent_taken < input.recent.len() {
        plan.recent_stop = Some(DropReason::Budget);
    }
    if let Some(n) = input.last_n {
        let available: u32 = input.recent.iter().map(|u| u.1).sum();
        plan.last_n_unmet = plan.recent_messages < n.min(available);
    }
    plan.total = budget - left;
    Ok(plan)
}

/// Whether a recalled message may be recalled: not one of `thread`'s
/// messages from `recent_from` on (those are, or may be, among the recent
/// messages; recall never repeats them).
#[must_use]
pub fn recallable(message_thread: ThreadId, seq: i64, thread: ThreadId, recent_from: Option<i64>) -> bool {
    message_thread != thread || recent_from.is_none_or(|from| seq < from)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shape() -> impl Strategy<Value = Shape> {
        let id = prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_owned);
        prop_oneof![
            3 => Just(Shape::Plain),
            2 => prop::collection::vec(id.clone(), 1..3).prop_map(Shape::Calls),
            3 => id.prop_map(Shape::Result),
        ]
    }

    fn items() -> impl Strategy<Value = Vec<(u32, Shape)>> {
        prop::collection::vec((1u32..200, shape()), 0..40)
    }

    fn priority() -> impl Strategy<Value = Priority> {
        Just(Section::DROPPABLE.to_vec()).prop_shuffle().prop_map(|v| Priority::new(&v).unwrap())
    }

    fn shares() -> impl Strategy<Value = Shares> {
        prop::collection::vec(prop::option::of(1u32..=100), 4).prop_map(|v| {
            let mut s = Shares::default();
            for (section, p) in Section::DROPPABLE.into_iter().zip(v) {
                if let Some(p) = p {
                    s = s.with(section, p).unwrap();
                }
            }
            s
        })
    }

    fn prefix_first_priority() -> impl Strategy<Value = Priority> {
        (any::<bool>(), any::<bool>()).prop_map(|(a, b)| {
            let mut order = Vec::new();
            order.extend(if a {
                [Section::WorkingMemory, Section::Summary]
            } else {
                [Section::Summary, Section::WorkingMemory]
            });
            order.extend(if b { [Section::Recall, Section::Recent] } else { [Section::Recent, Section::Recall] });
            Priority::new(&order).unwrap()
        })
    }

    prop_compose! {
        fn input()(
            budget in 0u32..4_000,
            reply_priming in 0u32..10,
            system in 0u32..600,
            working_memory in prop::option::of(1u32..800),
            summary in prop::option::of(1u32..800),
            recall in prop::collection::vec(1u32..400, 0..8),
            recall_header in 0u32..30,
            recent in prop::collection::vec((1u32..300, 1u32..4), 0..30),
            last_n in prop::option::of(1u32..12),
            priority in priority(),
            shares in shares(),
        ) -> PackInput {
            PackInput { budget, reply_priming, system, working_memory, summary, recall, recall_header, recent,
                        last_n, priority, shares }
        }
    }

    fn kept(d: Option<Result<u32, DropReason>>) -> u32 {
        d.and_then(Result::ok).unwrap_or(0)
    }

    proptest! {
        /// The total never exceeds the budget, and it is exactly what was kept.
        #[test]
        fn never_over_budget(input in input()) {
            if let Ok(plan) = pack(&input) {
                prop_assert!(plan.total <= input.budget);
                let recall: u32 = plan.recall.iter().map(|&i| input.recall[i]).sum::<u32>()
                    + if plan.recall.is_empty() { 0 } else { input.recall_header };
                prop_assert_eq!(recall, plan.recall_tokens);
                let recent: u32 = input.recent[..plan.recent_units].iter().map(|u| u.0).sum();
                prop_assert_eq!(recent, plan.recent_tokens);
                prop_assert_eq!(
                    plan.total,
                    input.system + input.reply_priming + kept(plan.working_memory) + kept(plan.summary)
                        + plan.recall_tokens + plan.recent_tokens
                );
            }
        }

        /// The system prompt is never dropped: either it is in, or the
        /// budget was too small and the error names the minimum that holds it.
        #[test]
        fn system_prompt_is_kept_or_the_minimum_is_named(input in input()) {
            match pack(&input) {
                Ok(plan) => prop_assert_eq!(plan.system, input.system),
                Err(TooSmall { minimum }) => {
                    prop_assert_eq!(minimum, input.system + input.reply_priming);
                    prop_assert!(minimum > input.budget);
                    let bigger = PackInput { budget: minimum, ..input };
                    prop_assert!(pack(&bigger).is_ok());
                }
            }
        }

        /// Identical inputs give identical plans.
        #[test]
        fn deterministic(input in input()) {
            prop_assert_eq!(pack(&input), pack(&input.clone()));
        }

        /// With the prefix ranked first, working memory and summary are
        /// decided by the prefix alone: any recall, recent or last_n leaves
        /// them as they are.
        #[test]
        fn prefix_depends_only_on_the_prefix(
            input in input(),
            priority in prefix_first_priority(),
            recall in prop::collection::vec(1u32..400, 0..8),
            recent in prop::collection::vec((1u32..300, 1u32..4), 0..30),
            last_n in prop::option::of(1u32..12),
        ) {
            prop_assert!(priority.prefix_first());
            let input = PackInput { priority, ..input };
            let other = PackInput { recall, recent, last_n, ..input.clone() };
            if let (Ok(a), Ok(b)) = (pack(&input), pack(&other)) {
                prop_assert_eq!(a.working_memory, b.working_memory);
                prop_assert_eq!(a.summary, b.summary);
            }
        }

        /// Recent is the newest units without a gap, and it stops only at a
        /// unit that does not fit what is left.
        #[test]
        fn recent_is_a_maximal_newest_run(input in input()) {
            if let Ok(plan) = pack(&input) {
                if let Some(&(next, _)) = input.recent.get(plan.recent_units) {
                    prop_assert!(plan.total + next > input.budget, "the next unit ({next}) would have fit");
                    prop_assert!(plan.recent_stop.is_some());
                } else {
                    prop_assert!(plan.recent_stop.is_none());
                }
            }
        }

        /// Shares: working memory and summary never pass theirs; a tail
        /// section passes its share only when what it took beyond it was
        /// left over by every section.
        #[test]
        fn shares_cap_each_section(input in input()) {
            if let Ok(plan) = pack(&input) {
                for (section, decision) in [(Section::WorkingMemory, plan.working_memory), (Section::Summary, plan.summary)] {
                    if let Some(Ok(cost)) = decision {
                        prop_assert!(cost <= input.shares.cap(section, input.budget));
                    }
                }
                // Recall's share is soft: no group is left out while the
                // budget still had room for it.
                for &(i, _) in &plan.recall_dropped {
                    let header = if plan.recall.is_empty() { input.recall_header } else { 0 };
                    prop_assert!(plan.total + input.recall[i] + header > input.budget, "group {} fit", i);
                }
            }
        }

        /// `last_n`: at least that many recent messages whenever they fit
        /// beside the system prompt and the prefix, whatever recall wants;
        /// otherwise it says so.
        #[test]
        fn last_n_is_met_when_it_fits(input in input(), priority in prefix_first_priority()) {
            let input = PackInput { priority, ..input };
            let Some(n) = input.last_n else { return Ok(()) };
            if let Ok(plan) = pack(&input) {
                let available: u32 = input.recent.iter().map(|u| u.1).sum();
                let mut need = 0u32;
                let mut messages = 0u32;
                for &(c, m) in &input.recent {
                    if messages >= n { break; }
                    need += c;
                    messages += m;
                }
                let before_recent = input.system + input.reply_priming + kept(plan.working_memory) + kept(plan.summary);
                if before_recent + need <= input.budget {
                    prop_assert!(plan.recent_messages >= n.min(available), "{} < {}", plan.recent_messages, n);
                    prop_assert!(!plan.last_n_unmet);
                } else {
                    prop_assert!(plan.last_n_unmet);
                }
            }
        }

        /// Units never split a tool exchange: every kept tool result's call
        /// is in the same unit, every item is in one unit or an orphan, and
        /// units are contiguous newest-first runs.
        #[test]
        fn segments_keep_tool_exchanges_whole(items in items(), complete in any::<bool>()) {
            let seg = segment_recent(&items, complete);
            let mut seen: Vec<usize> = seg.units.iter().flat_map(|u| u.items.clone()).chain(seg.orphans.clone()).collect();
            seen.sort_unstable();
            let covered = seen.len();
            seen.dedup();
            prop_assert_eq!(seen.len(), covered, "an item in two places");
            for (k, unit) in seg.units.iter().enumerate() {
                prop_assert!(!unit.items.is_empty());
                prop_assert_eq!(unit.cost, unit.items.iter().map(|&i| items[i].0).sum::<u32>());
                if k > 0 {
                    prop_assert!(unit.items[0] > *seg.units[k - 1].items.last().unwrap(), "units out of order");
                }
                for &i in &unit.items {
                    if let Shape::Result(id) = &items[i].1 {
                        let answered = unit.items.iter().any(|&j| j > i && matches!(&items[j].1, Shape::Calls(ids) if ids.contains(id)));
                        prop_assert!(answered, "result {} ({}) without its call in its unit", i, id);
                    }
                }
            }
            for &o in &seg.orphans {
                prop_assert!(matches!(items[o].1, Shape::Result(_)), "only tool results are orphans");
            }
            if complete || !seg.open {
                prop_assert_eq!(covered, items.len(), "every item placed");
            }
            if !complete && seg.open {
                // What is left out is a trailing run that may still find its call.
                let placed_max = seen.last().copied();
                prop_assert!(placed_max.is_none_or(|m| m + 1 < items.len()));
            }
        }

        /// Recall never repeats a recent message: a message of the thread
        /// at or after the first recent seq is not recallable, any other is.
        #[test]
        fn recall_never_repeats_recent(seq in 1i64..1000, from in prop::option::of(1i64..1000), same in any::<bool>()) {
            let thread = ThreadId::new();
            let other = if same { thread } else { ThreadId::new() };
            let ok = recallable(other, seq, thread, from);
            if same && from.is_some_and(|f| seq >= f) {
                prop_assert!(!ok);
            } else {
                prop_assert!(ok);
            }
        }

        /// The stored JSON of options reads back as the same options.
        #[test]
        fn options_round_trip(priority in priority(), shares in shares(), top_k in prop::option::of(1u32..=100),
                              before in 0u32..=20, after in 0u32..=20, disabled in any::<bool>(), resource in any::<bool>()) {
            let opts = ContextOptions {
                priority,
                shares,
                recall: RecallOptions {
                    disabled, scope: if resource { RecallScope::Resource } else { RecallScope::Thread },
                    top_k, before, after, mode: SearchMode::Lexical, min_score: Some(0.25),
                },
                processors: vec![
                    ProcessorSpec::ToolCallFilter { tools: vec!["lookup".into()] },
                    ProcessorSpec::RoleFilter { roles: vec![Role::Tool] },
                    ProcessorSpec::Truncate { max_chars: 500 },
                    ProcessorSpec::Dedupe,
                    ProcessorSpec::RedactPii,
                ],
            };
            prop_assert_eq!(ContextOptions::from_value(&opts.to_value()).unwrap(), opts);
        }
    }

    #[test]
    fn a_tool_exchange_is_one_unit_and_orphans_are_left_out() {
        let r = |id: &str| Shape::Result(id.into());
        let c = |ids: &[&str]| Shape::Calls(ids.iter().map(|s| (*s).to_owned()).collect());
        // Newest first: final answer, two results, the call, an orphan result, a user message.
        let items =
            vec![(5, Shape::Plain), (3, r("b")), (3, r("a")), (4, c(&["a", "b"])), (2, r("zz")), (1, Shape::Plain)];
        let seg = segment_recent(&items, true);
        let units: Vec<Vec<usize>> = seg.units.iter().map(|u| u.items.clone()).collect();
        assert_eq!(units, vec![vec![0], vec![1, 2, 3], vec![5]]);
        assert_eq!(seg.units[1].cost, 10);
        assert_eq!(seg.orphans, vec![4]);
        // Cut off before the call: the exchange waits for more messages.
        let seg = segment_recent(&items[..3], false);
        assert_eq!(seg.units.len(), 1);
        assert!(seg.open);
        // At the thread's start, an unanswered result is an orphan.
        let seg = segment_recent(&items[..3], true);
        assert_eq!(seg.orphans, vec![1, 2]);
    }

    #[test]
    fn too_small_names_the_minimum() {
        let input = PackInput { budget: 10, reply_priming: 3, system: 20, ..PackInput::default() };
        assert_eq!(pack(&input), Err(TooSmall { minimum: 23 }));
        assert!(pack(&PackInput { budget: 23, ..input }).is_ok());
    }

    #[test]
    fn last_n_outranks_recall_but_not_the_prefix() {
        let input = PackInput {
            budget: 100,
            summary: Some(30),
            recall: vec![40],
            recent: vec![(20, 1), (20, 1), (20, 1)],
            last_n: Some(2),
            ..PackInput::default()
        };
        let plan = pack(&input).unwrap();
        // Summary 30, then recall may not eat the 40 reserved for two recent messages.
        assert_eq!(plan.summary, Some(Ok(30)));
        assert!(plan.recall.is_empty());
        assert_eq!(plan.recent_messages, 3);
        assert!(!plan.last_n_unmet);
        // A summary too big for last_n still comes first: last_n is unmet, and said so.
        let plan = pack(&PackInput { summary: Some(75), ..input }).unwrap();
        assert_eq!((plan.recent_messages, plan.last_n_unmet), (1, true));
    }

    #[test]
    fn soft_shares_give_back_what_is_left() {
        let shares = Shares::default().with(Section::Recent, 50).unwrap();
        let input = PackInput {
            budget: 100,
            recent: vec![(20, 1); 5],
            recall: vec![10],
            priority: Priority::new(&[Section::Recent, Section::Recall]).unwrap(),
            shares,
            ..PackInput::default()
        };
        let plan = pack(&input).unwrap();
        // Recent first takes 40 (50% cap), recall 10, then recent takes 40 more.
        assert_eq!(plan.recall, vec![0]);
        assert_eq!(plan.recent_units, 4);
        assert_eq!(plan.total, 90);
        assert_eq!(plan.recent_stop, Some(DropReason::Budget));
    }

    #[test]
    fn budgets_and_priorities_are_validated() {
        assert_eq!(Budget::new(-5).unwrap_err().field, "budget");
        assert!(Budget::new(0).is_err() && Budget::new(i64::from(MAX_BUDGET) + 1).is_err());
        assert!(Budget::new(i64::from(MAX_BUDGET)).is_ok());
        assert!(Priority::new(&[Section::System]).is_err());
        assert!(Priority::new(&[Section::Recall, Section::Recall]).is_err());
        assert_eq!(
            Priority::new(&[Section::Recent]).unwrap().sections(),
            &[Section::Recent, Section::WorkingMemory, Section::Summary, Section::Recall]
        );
        assert!(Shares::default().with(Section::Recall, 0).is_err());
        assert!(Shares::default().with(Section::System, 10).is_err());
        assert!(ContextOptions::from_value(&json!({"processors": [{"kind": "explode"}]})).is_err());
        assert!(
            ContextOptions::from_value(&json!({"processors": [{"kind": "role_filter", "roles": ["system"]}]})).is_err()
        );
        assert!(ContextOptions::from_value(&json!({"v": 2})).is_err());
    }

    #[test]
    fn formats_frame_messages() {
        let f = ChatFormat::for_encoding("o200k_base", true);
        assert_eq!(f, ChatFormat::OPENAI);
        // OpenAI's cookbook: 3 + role, name 1 + its tokens, priming 3.
        assert_eq!(f.message(10, None, 0), 14);
        assert_eq!(f.message(10, Some(2), 0), 17);
        let e = ChatFormat::for_encoding("o200k_base", false);
        assert_eq!(e, ChatFormat::ESTIMATE);
        assert_eq!(e.text(100), 125);
        assert_eq!(e.text(1), 2, "the margin rounds up");
        assert!(!ChatFormat::for_encoding("estimate:chars/4", false).exact);
    }
}
