//! Working memory ([`WorkingMemory`]): one versioned document per resource
//! (what an agent knows about a user, across threads) or per thread, as JSON
//! or Markdown, with optimistic concurrency like agent state.

use serde::Serialize;
use serde_json::Value;

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

    /// Checks the size.
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
        Ok(())
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
