//! Messages: roles, tool calls, [`NewMessage`] validated at construction,
//! stored [`Message`]s with their sequence numbers, and the size limits of a
//! batch and of a message's fields.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DomainError, MessageId, Metadata, ThreadId, Timestamp, TokenCount, no_nul, no_nul_json};

/// Most messages accepted in one append.
pub const MAX_BATCH: usize = 1_000;

/// Checks the size of an append: at least one message, at most [`MAX_BATCH`].
///
/// # Errors
/// `messages` when the batch is empty or too large.
pub fn check_batch(len: usize) -> Result<(), DomainError> {
    if len == 0 {
        return Err(DomainError::new("messages", "must not be empty"));
    }
    if len > MAX_BATCH {
        return Err(DomainError::new(
            "messages",
            format!("{len} messages in one append, at most {MAX_BATCH} are accepted"),
        ));
    }
    Ok(())
}
/// Largest accepted message content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// Most bytes of tool-call arguments one message may carry: the compact
/// JSON text of every call's `arguments`, added up.
pub const MAX_TOOL_ARGUMENT_BYTES: usize = 256 * 1024;

/// Bytes of `value`'s compact JSON text, counted without building it.
#[must_use]
pub fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing JSON of a `Value` or a derived type to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Who authored a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The human or calling program.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call; carries the call's id.
    Tool,
}

impl Role {
    /// Lowercase name, as stored and sent.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => Ok(Self::System),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            "tool" => Ok(Self::Tool),
            other => Err(DomainError::new(
                "role",
                format!("unknown role {:?}; expected system, user, assistant or tool", crate::ids::truncate(other)),
            )),
        }
    }
}

/// A tool invocation requested by an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id a later `tool` message answers.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Arguments as JSON.
    pub arguments: Value,
}

/// A validated message waiting to be appended. The thread assigns its id,
/// sequence number and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    role: Role,
    content: String,
    tool_call_id: Option<String>,
    tool_name: Option<String>,
    tool_calls: Vec<ToolCall>,
    metadata: Metadata,
    token_count: Option<TokenCount>,
}

impl NewMessage {
    /// Validates a message.
    ///
    /// Rules: content at most [`MAX_CONTENT_BYTES`]; tool-call arguments at
    /// most [`MAX_TOOL_ARGUMENT_BYTES`] of JSON together; empty content only for an
    /// assistant message that carries tool calls; a `tool` message needs a
    /// `tool_call_id`, which no other role may carry; only assistant messages
    /// carry `tool_calls`.
    ///
    /// # Errors
    /// [`DomainError`] naming the first rule broken.
    pub fn new(
        role: Role,
        content: impl Into<String>,
        tool_call_id: Option<String>,
        tool_name: Option<String>,
        tool_calls: Vec<ToolCall>,
        metadata: Metadata,
    ) -> Result<Self, DomainError> {
        let content = content.into();
        if content.len() > MAX_CONTENT_BYTES {
            return Err(DomainError::new(
                "content",
                format!("is {} bytes, at most {MAX_CONTENT_BYTES} are accepted", content.len()),
            ));
        }
        no_nul("content", &content)?;
        let may_be_empty = role == Role::Assistant && !tool_calls.is_empty();
        if content.is_empty() && !may_be_empty {
            return Err(DomainError::new(
                "content",
                "must not be empty (only an assistant message with tool_calls may omit it)",
            ));
        }
        match (role, &tool_call_id) {
            (Role::Tool, None) => {
                return Err(DomainError::new("tool_call_id", "is required for a tool message"));
            }
            (Role::Tool, Some(id)) => {
                check_short("tool_call_id", id)?;
                no_nul("tool_call_id", id)?;
            }
            (_, Some(_)) => {
                return Err(DomainError::new("tool_call_id", "is only allowed on a tool message"));
            }
            (_, None) => {}
        }
        if let Some(name) = &tool_name {
            check_short("tool_name", name)?;
            no_nul("tool_name", name)?;
        }
        if !tool_calls.is_empty() && role != Role::Assistant {
            return Err(DomainError::new("tool_calls", "are only allowed on an assistant message"));
        }
        let mut argument_bytes = 0;
        for call in &tool_calls {
            check_short("tool_calls.id", &call.id)?;
            no_nul("tool_calls.id", &call.id)?;
            check_short("tool_calls.name", &call.name)?;
            no_nul("tool_calls.name", &call.name)?;
            no_nul_json("tool_calls.arguments", &call.arguments)?;
            argument_bytes += json_len(&call.arguments);
        }
        if argument_bytes > MAX_TOOL_ARGUMENT_BYTES {
            return Err(DomainError::new(
                "tool_calls",
                format!(
                    "arguments are {argument_bytes} bytes of JSON in total, at most {MAX_TOOL_ARGUMENT_BYTES} are accepted per message"
                ),
            ));
        }
        Ok(Self { role, content, tool_call_id, tool_name, tool_calls, metadata, token_count: None })
    }

    /// A plain message with no tool fields and empty metadata.
    ///
    /// # Errors
    /// As [`NewMessage::new`].
    pub fn text(role: Role, content: impl Into<String>) -> Result<Self, DomainError> {
        Self::new(role, content, None, None, Vec::new(), Metadata::default())
    }

    /// Attaches a token count computed by a token counter.
    #[must_use]
    pub fn with_token_count(mut self, count: TokenCount) -> Self {
        self.token_count = Some(count);
        self
    }

    /// Author role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }
    /// Text content.
    #[must_use]
    pub fn content(&self) -> &str {
        &self.content
    }
    /// The call a tool message answers.
    #[must_use]
    pub fn tool_call_id(&self) -> Option<&str> {
        self.tool_call_id.as_deref()
    }
    /// The tool's name, for tool messages.
    #[must_use]
    pub fn tool_name(&self) -> Option<&str> {
        self.tool_name.as_deref()
    }
    /// Calls requested by an assistant message.
    #[must_use]
    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.tool_calls
    }
    /// Metadata object.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// Token count, when one was computed.
    #[must_use]
    pub fn token_count(&self) -> Option<&TokenCount> {
        self.token_count.as_ref()
    }

    /// Completes the message with what the store assigns.
    #[must_use]
    pub fn into_message(self, id: MessageId, thread_id: ThreadId, seq: i64, created_at: Timestamp) -> Message {
        Message {
            id,
            thread_id,
            seq,
            role: self.role,
            content: self.content,
            tool_call_id: self.tool_call_id,
            tool_name: self.tool_name,
            tool_calls: self.tool_calls,
            metadata: self.metadata,
            token_count: self.token_count,
            created_at,
        }
    }
}

/// The text a model sees of a message, for token counting and embedding:
/// its content, then for each tool call a line `name arguments-json`.
#[must_use]
pub fn model_text(content: &str, calls: &[ToolCall]) -> String {
    let mut text = content.to_owned();
    for call in calls {
        text.push('\n');
        text.push_str(&call.name);
        text.push(' ');
        text.push_str(&call.arguments.to_string());
    }
    text
}

fn check_short(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > 256 {
        return Err(DomainError::new(field, "must be 1 to 256 bytes"));
    }
    Ok(())
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Time-ordered id.
    pub id: MessageId,
    /// The thread it belongs to.
    pub thread_id: ThreadId,
    /// Position in the thread: appends hand out 1, 2, 3… without gaps,
    /// strictly increasing in append order; a deleted message's number is
    /// never reused. The only ordering of messages.
    pub seq: i64,
    /// Author role.
    pub role: Role,
    /// Text content.
    pub content: String,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// The tool's name.
    pub tool_name: Option<String>,
    /// Calls requested by an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// Metadata object.
    pub metadata: Metadata,
    /// Token count with the model that counted it.
    pub token_count: Option<TokenCount>,
    /// Time the store accepted it.
    pub created_at: Timestamp,
}

/// Bytes counted for a message's fixed fields (ids, sequence number, role,
/// time, token count, JSON keys) by [`Message::approx_bytes`].
pub const MESSAGE_OVERHEAD_BYTES: usize = 320;

impl Message {
    /// About how many bytes the message takes in a response: its content,
    /// tool fields, tool calls and metadata (as compact JSON) plus
    /// [`MESSAGE_OVERHEAD_BYTES`]. JSON escaping of the content (quotes,
    /// control characters) may add to it. The measure of response byte
    /// budgets: a store stops a budgeted read by it.
    #[must_use]
    pub fn approx_bytes(&self) -> usize {
        let tool = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let calls: usize =
            self.tool_calls.iter().map(|c| c.id.len() + c.name.len() + 40 + json_len(&c.arguments)).sum();
        let metadata = if self.metadata.as_map().is_empty() { 2 } else { json_len(self.metadata.as_map()) };
        MESSAGE_OVERHEAD_BYTES
            + self.content.len()
            + tool(&self.tool_call_id)
            + tool(&self.tool_name)
            + calls
            + metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(role: Role, content: &str, tool_call_id: Option<&str>, calls: usize, ok: bool) {
        let calls =
            (0..calls).map(|i| ToolCall { id: format!("c{i}"), name: "t".into(), arguments: Value::Null }).collect();
        let got = NewMessage::new(role, content, tool_call_id.map(Into::into), None, calls, Metadata::default());
        assert_eq!(got.is_ok(), ok, "{role} {content:?} {tool_call_id:?}: {got:?}");
    }

    #[test]
    fn message_rules() {
        check(Role::User, "hi", None, 0, true);
        check(Role::User, "", None, 0, false);
        check(Role::Tool, "42", None, 0, false);
        check(Role::Tool, "42", Some("call_1"), 0, true);
        check(Role::User, "x", Some("call_1"), 0, false);
        check(Role::Assistant, "", None, 1, true);
        check(Role::Assistant, "", None, 0, false);
        check(Role::User, "x", None, 1, false);
        check(Role::Tool, "x", Some(""), 0, false);
    }

    #[test]
    fn model_text_appends_each_tool_call() {
        let call = ToolCall { id: "c1".into(), name: "lookup".into(), arguments: serde_json::json!({"a": "x"}) };
        assert_eq!(model_text("hi", &[call]), "hi\nlookup {\"a\":\"x\"}");
        assert_eq!(model_text("plain", &[]), "plain");
    }

    #[test]
    fn roles_parse() {
        assert_eq!("tool".parse::<Role>().ok(), Some(Role::Tool));
        assert_eq!("Tool".parse::<Role>().unwrap_err().field, "role");
    }

    #[test]
    fn oversized_tool_arguments_are_rejected() {
        let calls = |n: usize, each: usize| -> Vec<ToolCall> {
            (0..n)
                .map(|i| ToolCall { id: format!("c{i}"), name: "t".into(), arguments: Value::String("x".repeat(each)) })
                .collect()
        };
        let new = |calls| NewMessage::new(Role::Assistant, "", None, None, calls, Metadata::default());
        // Each string argument is its text plus two quotes.
        assert!(new(calls(4, MAX_TOOL_ARGUMENT_BYTES / 4 - 2)).is_ok(), "exactly at the limit");
        let err = new(calls(4, MAX_TOOL_ARGUMENT_BYTES / 4 - 1)).unwrap_err();
        assert_eq!(err.field, "tool_calls");
        assert!(err.to_string().contains(&MAX_TOOL_ARGUMENT_BYTES.to_string()), "names the limit: {err}");
    }

    #[test]
    fn approx_bytes_counts_what_a_response_carries() {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let plain = NewMessage::text(Role::User, "x".repeat(1000)).unwrap().into_message(
            MessageId::new(),
            ThreadId::new(),
            1,
            at,
        );
        assert_eq!(plain.approx_bytes(), MESSAGE_OVERHEAD_BYTES + 1000 + 2);
        let call = ToolCall { id: "c1".into(), name: "lookup".into(), arguments: serde_json::json!({"a": "x"}) };
        let meta = Metadata::from_value(serde_json::json!({"k": "v"})).unwrap();
        let rich = NewMessage::new(Role::Assistant, "hi", None, None, vec![call], meta).unwrap().into_message(
            MessageId::new(),
            ThreadId::new(),
            2,
            at,
        );
        assert_eq!(rich.approx_bytes(), MESSAGE_OVERHEAD_BYTES + 2 + (2 + 6 + 40 + 9) + 9);
        // The estimate is at least the JSON the message serialises to.
        for m in [&plain, &rich] {
            assert!(m.approx_bytes() >= json_len(m), "{} < {}", m.approx_bytes(), json_len(m));
        }
    }

    #[test]
    fn the_nul_character_is_refused_naming_the_field() {
        let err = NewMessage::text(Role::User, "before\u{0}after").unwrap_err();
        assert_eq!(err.field, "content");
        assert!(err.to_string().contains("NUL"), "{err}");
        let tool = |id: &str, name: &str| {
            NewMessage::new(Role::Tool, "42", Some(id.into()), Some(name.into()), Vec::new(), Metadata::default())
        };
        assert_eq!(tool("c\u{0}1", "lookup").unwrap_err().field, "tool_call_id");
        assert_eq!(tool("c1", "look\u{0}up").unwrap_err().field, "tool_name");
        assert!(tool("c1", "lookup").is_ok());
        let call = |id: &str, name: &str, arguments: Value| {
            let calls = vec![ToolCall { id: id.into(), name: name.into(), arguments }];
            NewMessage::new(Role::Assistant, "", None, None, calls, Metadata::default())
        };
        assert_eq!(call("c\u{0}", "f", Value::Null).unwrap_err().field, "tool_calls.id");
        assert_eq!(call("c", "f\u{0}", Value::Null).unwrap_err().field, "tool_calls.name");
        let err = call("c", "f", serde_json::json!({"q": ["\u{0}"]})).unwrap_err();
        assert_eq!(err.field, "tool_calls.arguments");
        assert!(err.reason.ends_with("`/q/0`"), "{err}");
        assert!(call("c", "f", serde_json::json!({"q": ["ok"]})).is_ok());
    }

    #[test]
    fn oversized_content_is_rejected() {
        let big = "x".repeat(MAX_CONTENT_BYTES + 1);
        assert_eq!(NewMessage::text(Role::User, big).unwrap_err().field, "content");
    }
}
