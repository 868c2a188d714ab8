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

    /// Validates that `value` is a JSON object of acceptable size, with no
    /// NUL character in any string or key ([`crate::no_nul_json`]).
    ///
    /// # Errors
    /// [`DomainError`] on `metadata` when it is not an object, too large or
    /// holds a NUL.
    pub fn from_value(value: Value) -> Result<Self, DomainError> {
        Self::from_value_for("metadata", value)
    }

    pub(crate) fn from_value_for(field: &'static str, value: Value) -> Result<Self, DomainError> {
        crate::no_nul_json(field, &value)?;
        Self::from_stored(field, value)
    }

    /// Metadata read back from a store: the checks of [`from_value`](Self::from_value)
    /// but the NUL rule, which is younger than some stored rows (libSQL kept
    /// them), so reading them never fails on it.
    ///
    /// # Errors
    /// [`DomainError`] on `field` when it is not an object or too large.
    pub fn from_stored(field: &'static str, value: Value) -> Result<Self, DomainError> {
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
        Self::from_stored("metadata", v)
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
        crate::no_nul("title", trimmed)?;
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
    /// Sets `metadata.pinned` ([`crate::PINNED_KEY`]) to this (a thread whose
    /// metadata holds `"pinned": true` is exempt from retention), after `metadata` when
    /// both are given; alone it changes that one key and keeps the rest.
    pub pinned: Option<bool>,
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
            && self.pinned.is_none()
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

/// The metadata key under which a forked thread names its source:
/// `{"thread_id": "<source id>", "at_seq": N}` (a fork of a fork names its
/// immediate source; a key of that name in the source's metadata is replaced).
pub const FORKED_FROM_KEY: &str = "forked_from";

/// What a fork of a thread asks for: up to which sequence number its
/// messages are copied (`None`: the whole thread, up to its `last_seq`), and
/// the new thread's title (`None`: the source's title followed by
/// `" (fork)"`, none when the source has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForkThread {
    at_seq: Option<i64>,
    title: Option<Title>,
}

impl ForkThread {
    /// A fork request.
    ///
    /// # Errors
    /// [`DomainError`] on `at_seq` when it is below 1.
    pub fn new(at_seq: Option<i64>, title: Option<Title>) -> Result<Self, DomainError> {
        if let Some(n) = at_seq
            && n < 1
        {
            return Err(DomainError::new("at_seq", format!("must be at least 1, got {n}")));
        }
        Ok(Self { at_seq, title })
    }

    /// The sequence number asked for, if any.
    #[must_use]
    pub fn at_seq(&self) -> Option<i64> {
        self.at_seq
    }

    /// The title asked for, if any.
    #[must_use]
    pub fn title(&self) -> Option<&Title> {
        self.title.as_ref()
    }

    /// The new thread forking `source` with id `id` at `at`: the source's
    /// resource, agent and model, the asked-for or derived title, the
    /// source's metadata with [`FORKED_FROM_KEY`] naming it, and `last_seq`
    /// the resolved `at_seq` (the next append continues after it). Returns
    /// the thread; its `last_seq` is the last sequence number copied.
    ///
    /// # Errors
    /// [`DomainError`] on `at_seq` when it lies beyond the source's
    /// `last_seq`, on `metadata` when naming the source makes it too large.
    pub fn forked(&self, source: &Thread, id: ThreadId, at: Timestamp) -> Result<Thread, DomainError> {
        let at_seq = match self.at_seq {
            None => source.last_seq,
            Some(n) if n > source.last_seq => {
                return Err(DomainError::new(
                    "at_seq",
                    format!("is {n}, beyond the thread's last message (last_seq {})", source.last_seq),
                ));
            }
            Some(n) => n,
        };
        let title = match &self.title {
            Some(t) => Some(t.clone()),
            None => source.title.as_ref().map(|t| {
                let suffix = " (fork)";
                let keep = Title::MAX_CHARS - suffix.chars().count();
                let base: String = t.as_str().chars().take(keep).collect();
                Title(format!("{}{suffix}", base.trim_end()))
            }),
        };
        let mut map = source.metadata.as_map().clone();
        let mut named = Map::new();
        named.insert("thread_id".to_owned(), Value::from(source.id.to_string()));
        named.insert("at_seq".to_owned(), Value::from(at_seq));
        map.insert(FORKED_FROM_KEY.to_owned(), Value::Object(named));
        Ok(Thread {
            id,
            tenant: source.tenant.clone(),
            resource_id: source.resource_id.clone(),
            agent_id: source.agent_id.clone(),
            title,
            model: source.model.clone(),
            metadata: Metadata::from_value(Value::Object(map))?,
            last_seq: at_seq,
            created_at: at,
            updated_at: at,
        })
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
    fn a_fork_names_its_source_and_stops_within_it() {
        let source = Thread {
            id: ThreadId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            resource_id: Some(ResourceId::parse("u1").unwrap()),
            agent_id: None,
            title: Some(Title::parse("x".repeat(Title::MAX_CHARS)).unwrap()),
            model: Some("gpt-4o".into()),
            metadata: Metadata::from_value(json!({"lang": "en", "forked_from": 1})).unwrap(),
            last_seq: 7,
            created_at: crate::now(),
            updated_at: crate::now(),
        };
        assert_eq!(ForkThread::new(Some(0), None).unwrap_err().field, "at_seq");
        let err = ForkThread::new(Some(8), None).unwrap().forked(&source, ThreadId::new(), crate::now()).unwrap_err();
        assert_eq!(err.field, "at_seq");
        let whole = ForkThread::default().forked(&source, ThreadId::new(), crate::now()).unwrap();
        assert_eq!(whole.last_seq, 7);
        let title = whole.title.unwrap();
        assert!(title.as_str().ends_with(" (fork)") && title.as_str().chars().count() == Title::MAX_CHARS);
        let named = ForkThread::new(Some(3), Some(Title::parse("B").unwrap())).unwrap();
        let fork = named.forked(&source, ThreadId::new(), crate::now()).unwrap();
        assert_eq!((fork.last_seq, fork.title.unwrap().as_str()), (3, "B"));
        assert_eq!(fork.resource_id, source.resource_id);
        assert_eq!(fork.metadata.as_map()["lang"], json!("en"));
        assert_eq!(fork.metadata.as_map()[FORKED_FROM_KEY], json!({"thread_id": source.id.to_string(), "at_seq": 3}));
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
