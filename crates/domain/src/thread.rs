//! Threads: [`Thread`], [`NewThread`], [`ThreadPatch`], metadata and its
//! filters, titles, and the [`ThreadFilter`] of a listing.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{AgentName, DomainError, ResourceId, TenantId, ThreadId, Timestamp};

/// A JSON object attached to threads and messages.
///
/// Always an object (never an array or scalar), at most [`Metadata::MAX_BYTES`]
/// when serialised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Largest accepted serialised size, in bytes.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Validates that `value` is a JSON object of acceptable size.
    ///
    /// # Errors
    /// [`DomainError`] on `metadata` when it is not an object or too large.
    pub fn from_value(value: Value) -> Result<Self, DomainError> {
        Self::from_value_for("metadata", value)
    }

    pub(crate) fn from_value_for(field: &'static str, value: Value) -> Result<Self, DomainError> {
        match value {
            Value::Object(map) => {
                let size = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(usize::MAX);
                if size > Self::MAX_BYTES {
                    return Err(DomainError::new(
                        field,
                        format!("is {size} bytes, at most {} are accepted", Self::MAX_BYTES),
                    ));
                }
                Ok(Self(map))
            }
            Value::Null => Ok(Self::default()),
            other => Err(DomainError::new(field, format!("must be a JSON object, got {}", json_kind(&other)))),
        }
    }

    /// Parses stored JSON text. Storage is trusted, but a corrupt row still
    /// yields an error rather than a panic.
    ///
    /// # Errors
    /// [`DomainError`] when the text is not a JSON object.
    pub fn from_json_str(s: &str) -> Result<Self, DomainError> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| DomainError::new("metadata", format!("stored value is not JSON: {e}")))?;
        Self::from_value(v)
    }

    /// The object.
    #[must_use]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Consumes into the object.
    #[must_use]
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Serialised JSON text.
    #[must_use]
    pub fn to_json_string(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A thread's human title: trimmed, 1 to 512 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Title(String);

impl Title {
    /// Longest accepted title, in characters.
    pub const MAX_CHARS: usize = 512;

    /// Validates a title.
    ///
    /// # Errors
    /// [`DomainError`] on `title` when empty after trimming or too long.
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(DomainError::new("title", "must not be empty"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::new("title", format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The title text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A conversation thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thread {
    /// Time-ordered id.
    pub id: ThreadId,
    /// Owner tenant; never crosses tenants.
    pub tenant: TenantId,
    /// The user or entity the thread belongs to.
    pub resource_id: Option<ResourceId>,
    /// The agent that converses in this thread.
    pub agent_id: Option<AgentName>,
    /// Human title.
    pub title: Option<Title>,
    /// Model whose tokenizer counts this thread's messages, unless a request names another.
    pub model: Option<String>,
    /// Free-form JSON object.
    pub metadata: Metadata,
    /// Number of messages ever appended; the last assigned sequence number.
    pub last_seq: i64,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change to the thread or its messages.
    pub updated_at: Timestamp,
}

/// What a caller provides to create a thread.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewThread {
    /// See [`Thread::resource_id`].
    pub resource_id: Option<ResourceId>,
    /// See [`Thread::agent_id`].
    pub agent_id: Option<AgentName>,
    /// See [`Thread::title`].
    pub title: Option<Title>,
    /// See [`Thread::model`].
    pub model: Option<ModelName>,
    /// See [`Thread::metadata`].
    pub metadata: Metadata,
}

/// A model name as given by callers (`gpt-4o`, `claude-3-5-sonnet`…): 1 to 128
/// printable ASCII characters.
pub type ModelName = String;

/// Validates a model name.
///
/// # Errors
/// [`DomainError`] on `model` when empty, too long or not printable ASCII.
pub fn parse_model(value: &str) -> Result<ModelName, DomainError> {
    if value.is_empty() || value.len() > 128 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(DomainError::new("model", "must be 1 to 128 printable ASCII characters without spaces"));
    }
    Ok(value.to_owned())
}

/// A partial update of a thread. `None` leaves a field unchanged;
/// `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadPatch {
    /// New title, or clear it.
    pub title: Option<Option<Title>>,
    /// New resource, or clear it.
    pub resource_id: Option<Option<ResourceId>>,
    /// New agent, or clear it.
    pub agent_id: Option<Option<AgentName>>,
    /// New model, or clear it.
    pub model: Option<Option<ModelName>>,
    /// Replaces the whole metadata object.
    pub metadata: Option<Metadata>,
}

impl ThreadPatch {
    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.resource_id.is_none()
            && self.agent_id.is_none()
            && self.model.is_none()
            && self.metadata.is_none()
    }
}

/// Equality on one top-level metadata key.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataFilter {
    key: String,
    value: Value,
}

impl MetadataFilter {
    /// Keys are 1 to 128 ASCII letters, digits, `_` or `-` (top-level keys only).
    ///
    /// # Errors
    /// [`DomainError`] on `metadata` for an unacceptable key.
    pub fn new(key: impl Into<String>, value: Value) -> Result<Self, DomainError> {
        let key = key.into();
        if key.is_empty() || key.len() > 128 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(DomainError::new(
                "metadata",
                format!("filter key {:?} must be 1 to 128 ASCII letters, digits, _ or -", crate::ids::truncate(&key)),
            ));
        }
        Ok(Self { key, value })
    }

    /// The top-level key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value the key must equal.
    #[must_use]
    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// Which threads a listing returns. All conditions must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadFilter {
    /// Only threads of this resource.
    pub resource_id: Option<ResourceId>,
    /// Only threads of this agent.
    pub agent_id: Option<AgentName>,
    /// Only threads whose metadata has each key equal to its value.
    pub metadata: Vec<MetadataFilter>,
}

impl ThreadFilter {
    /// Checks the filter's size: at most [`MAX_FILTERS`](crate::MAX_FILTERS)
    /// metadata filters, as for catalog listings (each is a condition
    /// of the query, and an unbounded number of them exhausts the engine).
    ///
    /// # Errors
    /// [`DomainError`] on `metadata` naming the limit.
    pub fn check(&self) -> Result<(), DomainError> {
        if self.metadata.len() > crate::MAX_FILTERS {
            return Err(DomainError::new(
                "metadata",
                format!("{} filters given, at most {} are accepted", self.metadata.len(), crate::MAX_FILTERS),
            ));
        }
        Ok(())
    }

    /// A stable fingerprint of the filter, bound into listing cursors so that a
    /// cursor cannot be replayed against a different filter.
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        let mut s = String::new();
        s.push_str(self.resource_id.as_ref().map_or("", |r| r.as_str()));
        s.push('\u{1}');
        s.push_str(self.agent_id.as_ref().map_or("", |a| a.as_str()));
        for m in &self.metadata {
            s.push('\u{1}');
            s.push_str(&m.key);
            s.push('=');
            s.push_str(&m.value.to_string());
        }
        crate::seal::fnv1a(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_must_be_an_object() {
        assert!(Metadata::from_value(json!({"a": 1})).is_ok());
        assert!(Metadata::from_value(Value::Null).is_ok_and(|m| m.as_map().is_empty()));
        for bad in [json!([1]), json!("x"), json!(3), json!(true)] {
            let err = Metadata::from_value(bad).unwrap_err();
            assert_eq!(err.field, "metadata");
        }
        let big = json!({"k": "x".repeat(Metadata::MAX_BYTES)});
        assert!(Metadata::from_value(big).is_err());
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(Title::parse("  hi ").map(|t| t.as_str().to_owned()).ok(), Some("hi".into()));
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse("x".repeat(513)).is_err());
    }

    #[test]
    fn filter_fingerprint_distinguishes_filters() {
        let a = ThreadFilter::default();
        let b = ThreadFilter { resource_id: Some(ResourceId::parse("u1").unwrap()), ..ThreadFilter::default() };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(MetadataFilter::new("bad key", json!(1)).is_err());
        assert!(MetadataFilter::new("$.x", json!(1)).is_err());
    }
}
