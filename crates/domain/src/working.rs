//! Working memory ([`WorkingMemory`]): one versioned document per resource
//! (what an agent knows about a user, across threads) or per thread, as JSON
//! or Markdown, with optimistic concurrency like agent state.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::thread::json_kind;
use crate::{DomainError, ResourceId, StateVersion, ThreadId, Timestamp};

/// Where a working-memory document lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum WorkingScope {
    /// One document per resource (a user or entity), shared by its threads.
    Resource(ResourceId),
    /// One document per thread.
    Thread(ThreadId),
}

/// The document itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "format", content = "content", rename_all = "snake_case")]
pub enum WorkingContent {
    /// A JSON value (validated against the agent's JSON Schema, when it has one).
    Json(Value),
    /// Markdown text (shaped by the agent's template, when it has one).
    Markdown(String),
}

impl WorkingContent {
    /// Largest accepted document, in bytes (serialised JSON, or the text).
    pub const MAX_BYTES: usize = 256 * 1024;

    /// The document's size in bytes, as [`MAX_BYTES`](Self::MAX_BYTES) counts it.
    #[must_use]
    pub fn len_bytes(&self) -> usize {
        match self {
            Self::Json(v) => crate::json_len(v),
            Self::Markdown(s) => s.len(),
        }
    }

    /// Checks the size, and that it holds no NUL ([`crate::no_nul_json`]).
    ///
    /// # Errors
    /// [`DomainError`] on `content`.
    pub fn validate(&self) -> Result<(), DomainError> {
        let size = self.len_bytes();
        if size > Self::MAX_BYTES {
            return Err(DomainError::new(
                "content",
                format!("is {size} bytes, at most {} are accepted", Self::MAX_BYTES),
            ));
        }
        match self {
            Self::Json(v) => crate::no_nul_json("content", v),
            Self::Markdown(text) => crate::no_nul("content", text),
        }
    }
}

/// A stored working-memory document (the current one, or a kept version).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkingMemory {
    /// Where it lives.
    pub scope: WorkingScope,
    /// The document.
    pub content: WorkingContent,
    /// Version after the write that produced it (1, 2, 3…; 0 means absent).
    pub version: StateVersion,
    /// Time of that write.
    pub updated_at: Timestamp,
}

impl WorkingScope {
    /// Which kind of scope this is.
    #[must_use]
    pub fn kind(&self) -> WorkingScopeKind {
        match self {
            Self::Resource(_) => WorkingScopeKind::Resource,
            Self::Thread(_) => WorkingScopeKind::Thread,
        }
    }

    /// The scope's id as text: the resource id, or the thread id.
    #[must_use]
    pub fn id_text(&self) -> String {
        match self {
            Self::Resource(r) => r.as_str().to_owned(),
            Self::Thread(t) => t.to_string(),
        }
    }
}

impl WorkingContent {
    /// The format's name: `json` or `markdown`.
    #[must_use]
    pub fn format(&self) -> WorkingFormatKind {
        match self {
            Self::Json(_) => WorkingFormatKind::Json,
            Self::Markdown(_) => WorkingFormatKind::Markdown,
        }
    }
}

/// Which document an agent keeps: one per resource (across its threads) or
/// one per thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WorkingScopeKind {
    /// One document per resource (the default).
    #[default]
    Resource,
    /// One document per thread.
    Thread,
}

impl WorkingScopeKind {
    /// `resource` or `thread`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resource => "resource",
            Self::Thread => "thread",
        }
    }

    /// Parses `resource` or `thread`.
    ///
    /// # Errors
    /// [`DomainError`] on `field` for anything else.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, DomainError> {
        match s {
            "resource" => Ok(Self::Resource),
            "thread" => Ok(Self::Thread),
            other => Err(DomainError::new(
                field,
                format!("must be `resource` or `thread`, got `{}`", crate::ids::truncate(other)),
            )),
        }
    }
}

/// A document's format, without its content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WorkingFormatKind {
    /// A JSON value (the default).
    #[default]
    Json,
    /// Markdown text.
    Markdown,
}

impl WorkingFormatKind {
    /// `json` or `markdown`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Markdown => "markdown",
        }
    }

    /// Parses `json` or `markdown`.
    ///
    /// # Errors
    /// [`DomainError`] on `field` for anything else.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, DomainError> {
        match s {
            "json" => Ok(Self::Json),
            "markdown" => Ok(Self::Markdown),
            other => Err(DomainError::new(
                field,
                format!("must be `json` or `markdown`, got `{}`", crate::ids::truncate(other)),
            )),
        }
    }
}

/// An agent's working-memory format: JSON with an optional JSON Schema, or
/// Markdown with an optional template (the document before its first write).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkingFormat {
    /// A JSON document, validated against `schema` when set.
    Json {
        /// A JSON Schema (an object or a boolean). The domain checks its
        /// shape and size; the application compiles it.
        schema: Option<Value>,
    },
    /// Markdown text.
    Markdown {
        /// What a never-written document reads as.
        template: Option<String>,
    },
}

impl Default for WorkingFormat {
    fn default() -> Self {
        Self::Json { schema: None }
    }
}

impl WorkingFormat {
    /// The format without its schema or template.
    #[must_use]
    pub fn kind(&self) -> WorkingFormatKind {
        match self {
            Self::Json { .. } => WorkingFormatKind::Json,
            Self::Markdown { .. } => WorkingFormatKind::Markdown,
        }
    }
}

/// How an agent keeps working memory (`memory.working_memory` of an agent
/// in the catalog): which document, its format, and how many versions stay.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingMemoryOptions {
    /// One document per resource or per thread.
    pub scope: WorkingScopeKind,
    /// JSON (with a schema) or Markdown (with a template).
    pub format: WorkingFormat,
    /// Versions kept, the current one included (1 to
    /// [`MAX_VERSIONS`](Self::MAX_VERSIONS)).
    pub versions: u32,
}

impl Default for WorkingMemoryOptions {
    fn default() -> Self {
        Self { scope: WorkingScopeKind::default(), format: WorkingFormat::default(), versions: Self::DEFAULT_VERSIONS }
    }
}

impl WorkingMemoryOptions {
    /// Versions kept when the options do not say.
    pub const DEFAULT_VERSIONS: u32 = 10;
    /// Most versions an agent may keep.
    pub const MAX_VERSIONS: u32 = 100;
    /// Largest JSON Schema, in bytes.
    pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
    /// Version of the stored JSON form ([`to_value`](Self::to_value)).
    const STORED_VERSION: u64 = 1;

    /// Checks the bounds and shapes the domain can check (the application
    /// also compiles the schema).
    ///
    /// # Errors
    /// [`DomainError`] on `memory.working_memory.versions`, `.schema` or
    /// `.template`.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.versions == 0 || self.versions > Self::MAX_VERSIONS {
            return Err(DomainError::new(
                "memory.working_memory.versions",
                format!("must be between 1 and {}, got {}", Self::MAX_VERSIONS, self.versions),
            ));
        }
        match &self.format {
            WorkingFormat::Json { schema: Some(schema) } => {
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(DomainError::new(
                        "memory.working_memory.schema",
                        format!("must be a JSON Schema (an object or a boolean), got {}", json_kind(schema)),
                    ));
                }
                let size = crate::json_len(schema);
                if size > Self::MAX_SCHEMA_BYTES {
                    return Err(DomainError::new(
                        "memory.working_memory.schema",
                        format!("is {size} bytes, at most {} are accepted", Self::MAX_SCHEMA_BYTES),
                    ));
                }
                crate::no_nul_json("memory.working_memory.schema", schema)?;
            }
            WorkingFormat::Markdown { template: Some(template) } => {
                if template.len() > WorkingContent::MAX_BYTES {
                    return Err(DomainError::new(
                        "memory.working_memory.template",
                        format!("is {} bytes, at most {} are accepted", template.len(), WorkingContent::MAX_BYTES),
                    ));
                }
                crate::no_nul("memory.working_memory.template", template)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// What a never-written document reads as: the template (or empty
    /// text) for Markdown, an empty object for JSON.
    #[must_use]
    pub fn initial_content(&self) -> WorkingContent {
        match &self.format {
            WorkingFormat::Json { .. } => WorkingContent::Json(Value::Object(Map::new())),
            WorkingFormat::Markdown { template } => WorkingContent::Markdown(template.clone().unwrap_or_default()),
        }
    }

    /// The stored JSON form, versioned (`"v": 1`): `scope`, `format`,
    /// `versions`, and `schema` or `template` when set.
    #[must_use]
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("v".into(), Value::from(Self::STORED_VERSION));
        m.insert("scope".into(), Value::from(self.scope.as_str()));
        m.insert("format".into(), Value::from(self.format.kind().as_str()));
        m.insert("versions".into(), Value::from(self.versions));
        match &self.format {
            WorkingFormat::Json { schema: Some(s) } => {
                m.insert("schema".into(), s.clone());
            }
            WorkingFormat::Markdown { template: Some(t) } => {
                m.insert("template".into(), Value::from(t.as_str()));
            }
            _ => {}
        }
        Value::Object(m)
    }

    /// Reads the stored JSON form back.
    ///
    /// # Errors
    /// [`DomainError`] on `memory.working_memory` for a form this version
    /// does not know, or on the field that is out of bounds.
    pub fn from_value(v: &Value) -> Result<Self, DomainError> {
        const FIELD: &str = "memory.working_memory";
        let Value::Object(m) = v else {
            return Err(DomainError::new(FIELD, format!("must be an object, got {}", json_kind(v))));
        };
        if m.get("v").and_then(Value::as_u64) != Some(Self::STORED_VERSION) {
            return Err(DomainError::new(FIELD, "stored in an unknown version"));
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
        let scope = WorkingScopeKind::parse("memory.working_memory.scope", text("scope"))?;
        let format = match WorkingFormatKind::parse("memory.working_memory.format", text("format"))? {
            WorkingFormatKind::Json => WorkingFormat::Json { schema: m.get("schema").cloned() },
            WorkingFormatKind::Markdown => {
                WorkingFormat::Markdown { template: m.get("template").and_then(Value::as_str).map(str::to_owned) }
            }
        };
        let versions = m
            .get("versions")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| DomainError::new("memory.working_memory.versions", "is missing"))?;
        let options = Self { scope, format, versions };
        options.validate()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn options_round_trip_their_stored_form() {
        let cases = [
            WorkingMemoryOptions::default(),
            WorkingMemoryOptions {
                scope: WorkingScopeKind::Thread,
                format: WorkingFormat::Json { schema: Some(json!({"type": "object"})) },
                versions: 3,
            },
            WorkingMemoryOptions {
                scope: WorkingScopeKind::Resource,
                format: WorkingFormat::Markdown { template: Some("# User\n- name:\n".into()) },
                versions: WorkingMemoryOptions::MAX_VERSIONS,
            },
            WorkingMemoryOptions { format: WorkingFormat::Markdown { template: None }, ..Default::default() },
        ];
        for options in cases {
            let stored = options.to_value();
            assert_eq!(stored["v"], json!(1), "the stored form is versioned");
            assert_eq!(WorkingMemoryOptions::from_value(&stored).unwrap(), options);
        }
        assert!(WorkingMemoryOptions::from_value(&json!({"v": 2, "scope": "thread"})).is_err());
        assert!(WorkingMemoryOptions::from_value(&json!("x")).is_err());
    }

    #[test]
    fn options_bounds_name_their_field() {
        let check = |options: WorkingMemoryOptions, field: Option<&str>| {
            assert_eq!(options.validate().err().map(|e| e.field), field, "{options:?}");
        };
        check(WorkingMemoryOptions::default(), None);
        check(WorkingMemoryOptions { versions: 0, ..Default::default() }, Some("memory.working_memory.versions"));
        check(WorkingMemoryOptions { versions: 101, ..Default::default() }, Some("memory.working_memory.versions"));
        let schema =
            |s: Value| WorkingMemoryOptions { format: WorkingFormat::Json { schema: Some(s) }, ..Default::default() };
        check(schema(json!(true)), None);
        check(schema(json!([1])), Some("memory.working_memory.schema"));
        let big = json!({"description": "x".repeat(WorkingMemoryOptions::MAX_SCHEMA_BYTES)});
        check(schema(big), Some("memory.working_memory.schema"));
        let template = WorkingFormat::Markdown { template: Some("x".repeat(WorkingContent::MAX_BYTES + 1)) };
        check(WorkingMemoryOptions { format: template, ..Default::default() }, Some("memory.working_memory.template"));
    }

    #[test]
    fn never_written_documents_read_as_the_template_or_an_empty_object() {
        assert_eq!(WorkingMemoryOptions::default().initial_content(), WorkingContent::Json(json!({})));
        let md = WorkingMemoryOptions {
            format: WorkingFormat::Markdown { template: Some("# Notes".into()) },
            ..Default::default()
        };
        assert_eq!(md.initial_content(), WorkingContent::Markdown("# Notes".into()));
    }
}
