//! Working memory ([`WorkingMemoryService`]): a versioned document per
//! resource or per thread, shaped by the agent's working-memory options
//! (JSON with a JSON Schema, or Markdown with a template), replaced with an
//! expected version, merged with an RFC 7396 merge patch, listed and
//! restored by version.
//!
//! Whose options apply: a thread's document follows its thread's agent (the
//! thread's `agent_id`, looked up in the catalog when it is used, so a
//! schema changed on the agent applies at once); a resource's document
//! follows the agent the caller names, if any. Without a catalog agent (no
//! name, or a thread's agent that lives outside memlayer), or for an agent
//! without `memory.working_memory`, the defaults apply: any format, no
//! schema, 10 versions kept.

use std::sync::Arc;
use std::time::Duration;

use memlayer_domain::{
    AgentName, DomainError, Reach, StateVersion, Timestamp, WorkingContent, WorkingFormat, WorkingFormatKind,
    WorkingMemory, WorkingMemoryOptions, WorkingScope,
};
use memlayer_ports::{StoreError, ThreadStore, WorkingMemoryStore};
use serde_json::Value;

use crate::CatalogService;

/// Most attempts of one merge patch or restore against concurrent writers
/// before it gives up with `Conflict`. Each lost round means another writer
/// won it, so with jittered backoff (at most 64 ms a wait) dozens of
/// concurrent patchers of one document all get through.
pub const MAX_MERGE_ATTEMPTS: u32 = 32;

/// Compiled JSON Schemas kept, keyed by the schema's text.
const SCHEMA_CACHE_ENTRIES: u64 = 1_000;

/// A working-memory document as the service answers: the stored one, or,
/// never written, what it starts as (the template, or an empty JSON object)
/// at version 0.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingDocument {
    /// Where it lives.
    pub scope: WorkingScope,
    /// The document.
    pub content: WorkingContent,
    /// Its version (0: never written).
    pub version: StateVersion,
    /// Time of the write that produced it; `None` when never written.
    pub updated_at: Option<Timestamp>,
    /// The catalog agent whose options applied, if any.
    pub agent: Option<AgentName>,
}

impl WorkingDocument {
    fn stored(memory: WorkingMemory, agent: Option<AgentName>) -> Self {
        Self {
            scope: memory.scope,
            content: memory.content,
            version: memory.version,
            updated_at: Some(memory.updated_at),
            agent,
        }
    }
}

/// The options that apply to one document, and where they come from.
#[derive(Debug, Clone)]
struct Applied {
    options: WorkingMemoryOptions,
    /// The agent had `memory.working_memory` set: its format is the only one
    /// accepted. Otherwise any format is.
    configured: bool,
    agent: Option<AgentName>,
}

/// Working memory over a [`WorkingMemoryStore`], with the agent's options
/// from the catalog.
#[derive(Clone)]
pub struct WorkingMemoryService {
    store: Arc<dyn WorkingMemoryStore>,
    threads: Arc<dyn ThreadStore>,
    catalog: Option<CatalogService>,
    schemas: moka::sync::Cache<String, Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for WorkingMemoryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkingMemoryService")
            .field("store", &self.store)
            .field("cached_schemas", &self.schemas.entry_count())
            .finish_non_exhaustive()
    }
}

impl WorkingMemoryService {
    /// A service over `store`, reading threads (for reach and their agent)
    /// from `threads`; without [`with_catalog`](Self::with_catalog) every
    /// document gets the default options.
    #[must_use]
    pub fn new(store: Arc<dyn WorkingMemoryStore>, threads: Arc<dyn ThreadStore>) -> Self {
        Self { store, threads, catalog: None, schemas: moka::sync::Cache::new(SCHEMA_CACHE_ENTRIES) }
    }

    /// Reads agents' working-memory options from `catalog`.
    #[must_use]
    pub fn with_catalog(mut self, catalog: CatalogService) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The store, for readers that need no options (context assembly).
    #[must_use]
    pub fn store(&self) -> Arc<dyn WorkingMemoryStore> {
        self.store.clone()
    }

    /// The document (never written: its initial content at version 0).
    ///
    /// `agent` names the catalog agent whose options apply to a resource's
    /// document; a thread's follows its thread's agent.
    ///
    /// # Errors
    /// `NotFound` for a thread or resource the caller does not reach (a
    /// caller bound to a resource reaches only its own resource and its
    /// threads) and for an `agent` the catalog does not hold; `Invalid` for
    /// an `agent` named for a thread's document.
    pub async fn get(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
    ) -> Result<WorkingDocument, StoreError> {
        let applied = self.applied(who, scope, agent).await?;
        Ok(match self.store.get_working(who, scope).await? {
            Some(stored) => WorkingDocument::stored(stored, applied.agent),
            None => WorkingDocument {
                scope: scope.clone(),
                content: applied.options.initial_content(),
                version: 0,
                updated_at: None,
                agent: applied.agent,
            },
        })
    }

    /// Replaces the document if `expected` is its current version (0: never
    /// written). `format` says how to read `content` (a Markdown document is
    /// a JSON string); without it, the agent's format, else JSON. A JSON
    /// document must satisfy the agent's schema.
    ///
    /// # Errors
    /// `Conflict` for a stale `expected`; `Invalid` naming the JSON path for
    /// a document the schema refuses, for a format other than the agent's,
    /// for Markdown that is not a string, or for a document over
    /// [`WorkingContent::MAX_BYTES`]; as [`get`](Self::get) otherwise.
    pub async fn put(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
        format: Option<WorkingFormatKind>,
        content: Value,
        expected: StateVersion,
    ) -> Result<WorkingDocument, StoreError> {
        let applied = self.applied(who, scope, agent).await?;
        let content = self.content(&applied, format, content)?;
        let stored = self.store.put_working(who, scope, content, expected, applied.options.versions).await?;
        Ok(WorkingDocument::stored(stored, applied.agent))
    }

    /// Applies an RFC 7396 JSON merge patch to the JSON document (never
    /// written: to an empty object) atomically: read, merge, validate, and
    /// put with the version read, again from the read when another writer
    /// got in between (at most [`MAX_MERGE_ATTEMPTS`] times, with jittered
    /// backoff). Two concurrent patches of different fields both stay.
    ///
    /// # Errors
    /// `Invalid` when the merged document fails the schema (naming the JSON
    /// path); `Conflict` when the document or the agent's format is
    /// Markdown, or when every attempt lost to another writer; as
    /// [`get`](Self::get) otherwise.
    pub async fn patch(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
        patch: &Value,
    ) -> Result<WorkingDocument, StoreError> {
        self.patch_if(who, scope, agent, patch, None).await
    }

    /// [`patch`](Self::patch) only while the document is at version
    /// `if_match` (an HTTP `If-Match`): a concurrent write is then not
    /// merged over but refused; `None` merges whatever the version.
    ///
    /// # Errors
    /// As [`patch`](Self::patch), plus `PreconditionFailed` when the
    /// document is (or, before the write, became) at another version.
    pub async fn patch_if(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
        patch: &Value,
        if_match: Option<StateVersion>,
    ) -> Result<WorkingDocument, StoreError> {
        let applied = self.applied(who, scope, agent).await?;
        if applied.configured && applied.options.format.kind() == WorkingFormatKind::Markdown {
            return Err(markdown_patch());
        }
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let current = self.store.get_working(who, scope).await?;
            let (mut doc, expected) = match current {
                None => (Value::Object(serde_json::Map::new()), 0),
                Some(WorkingMemory { content: WorkingContent::Json(v), version, .. }) => (v, version),
                Some(WorkingMemory { content: WorkingContent::Markdown(_), .. }) => return Err(markdown_patch()),
            };
            precondition(if_match, expected)?;
            json_patch::merge(&mut doc, patch);
            let content = self.content(&applied, Some(WorkingFormatKind::Json), doc)?;
            match self.store.put_working(who, scope, content, expected, applied.options.versions).await {
                Ok(stored) => return Ok(WorkingDocument::stored(stored, applied.agent)),
                Err(StoreError::Conflict(_)) if if_match.is_some() => return Err(moved_on(if_match)),
                Err(StoreError::Conflict(_)) => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "working memory kept changing: the merge patch lost to other writers {MAX_MERGE_ATTEMPTS} times; retry"
        )))
    }

    /// The kept versions, newest first (the current one first).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn versions(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
    ) -> Result<Vec<WorkingMemory>, StoreError> {
        self.reach(who, scope).await?;
        self.store.working_versions(who, scope, WorkingMemoryOptions::MAX_VERSIONS).await
    }

    /// Makes a kept version current again, as a new version (the versions
    /// in between stay kept, as far as the agent keeps them). The restored
    /// document must satisfy the agent's options as they are now.
    ///
    /// # Errors
    /// `NotFound` when `version` is not kept; `Invalid` when the agent's
    /// schema or format refuses it now; `Conflict` when every attempt lost
    /// to another writer; as [`get`](Self::get) otherwise.
    pub async fn restore(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
        version: StateVersion,
    ) -> Result<WorkingDocument, StoreError> {
        self.restore_if(who, scope, agent, version, None).await
    }

    /// [`restore`](Self::restore) only while the document is at version
    /// `if_match` (an HTTP `If-Match`); `None` restores over any version.
    ///
    /// # Errors
    /// As [`restore`](Self::restore), plus `PreconditionFailed` when the
    /// document is (or, before the write, became) at another version.
    pub async fn restore_if(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
        version: StateVersion,
        if_match: Option<StateVersion>,
    ) -> Result<WorkingDocument, StoreError> {
        let applied = self.applied(who, scope, agent).await?;
        for attempt in 0..MAX_MERGE_ATTEMPTS {
            let kept = self.store.working_versions(who, scope, WorkingMemoryOptions::MAX_VERSIONS).await?;
            let current = kept.first().map_or(0, |w| w.version);
            precondition(if_match, current)?;
            let Some(old) = kept.into_iter().find(|w| w.version == version) else {
                return Err(StoreError::not_found("working memory version", version));
            };
            let (format, value) = match old.content {
                WorkingContent::Json(v) => (WorkingFormatKind::Json, v),
                WorkingContent::Markdown(s) => (WorkingFormatKind::Markdown, Value::String(s)),
            };
            let content = self.content(&applied, Some(format), value)?;
            match self.store.put_working(who, scope, content, current, applied.options.versions).await {
                Ok(stored) => return Ok(WorkingDocument::stored(stored, applied.agent)),
                Err(StoreError::Conflict(_)) if if_match.is_some() => return Err(moved_on(if_match)),
                Err(StoreError::Conflict(_)) => backoff(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "working memory kept changing: the restore lost to other writers {MAX_MERGE_ATTEMPTS} times; retry"
        )))
    }

    /// `NotFound` unless the caller reaches the scope; a thread scope's
    /// thread, read.
    async fn reach(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
    ) -> Result<Option<memlayer_domain::Thread>, StoreError> {
        match scope {
            WorkingScope::Resource(r) => {
                if who.reaches(Some(r)) {
                    Ok(None)
                } else {
                    Err(StoreError::not_found("resource", r))
                }
            }
            WorkingScope::Thread(id) => {
                let thread = self.threads.get(who, *id).await?;
                if !who.reaches(thread.resource_id.as_ref()) {
                    return Err(StoreError::not_found("thread", id));
                }
                Ok(Some(thread))
            }
        }
    }

    /// The options that apply to the document, after checking reach.
    async fn applied(
        &self,
        who: &(impl Reach + 'static),
        scope: &WorkingScope,
        agent: Option<&AgentName>,
    ) -> Result<Applied, StoreError> {
        let (name, must_exist) = match (self.reach(who, scope).await?, agent) {
            (Some(_), Some(_)) => {
                return Err(DomainError::new(
                    "agent",
                    "a thread's working memory follows its thread's agent; name an agent only for a resource's",
                )
                .into());
            }
            (Some(thread), None) => (thread.agent_id, false),
            (None, agent) => (agent.cloned(), true),
        };
        let defaults = Applied { options: WorkingMemoryOptions::default(), configured: false, agent: None };
        let Some(name) = name else { return Ok(defaults) };
        let found = match &self.catalog {
            Some(catalog) => catalog.agent_by_name(who.tenant(), &name).await?,
            None => None,
        };
        match found {
            Some(config) => Ok(match config.spec.memory.working_memory {
                Some(options) => Applied { options, configured: true, agent: Some(name) },
                None => Applied { agent: Some(name), ..defaults },
            }),
            None if must_exist => Err(StoreError::not_found("agent", name)),
            None => Ok(defaults),
        }
    }

    /// `value` as a document of the format asked (else the agent's), checked
    /// against the options.
    fn content(
        &self,
        applied: &Applied,
        format: Option<WorkingFormatKind>,
        value: Value,
    ) -> Result<WorkingContent, StoreError> {
        let own = applied.options.format.kind();
        let format = format.unwrap_or(own);
        if applied.configured && format != own {
            return Err(DomainError::new(
                "format",
                format!("this agent keeps working memory as {}, not {}", own.as_str(), format.as_str()),
            )
            .into());
        }
        let content = match (format, value) {
            (WorkingFormatKind::Markdown, Value::String(s)) => WorkingContent::Markdown(s),
            (WorkingFormatKind::Markdown, other) => {
                return Err(DomainError::new(
                    "content",
                    format!("a Markdown document is a string, got {}", kind_of(&other)),
                )
                .into());
            }
            (WorkingFormatKind::Json, v) => WorkingContent::Json(v),
        };
        content.validate()?;
        if let (WorkingContent::Json(doc), WorkingFormat::Json { schema: Some(schema) }) =
            (&content, &applied.options.format)
        {
            self.validator(schema)?.check(doc)?;
        }
        Ok(content)
    }

    /// The compiled schema (cached by its text).
    fn validator(&self, schema: &Value) -> Result<SchemaCheck, StoreError> {
        let key = schema.to_string();
        if let Some(hit) = self.schemas.get(&key) {
            return Ok(SchemaCheck(hit));
        }
        let compiled = Arc::new(compile(schema)?);
        self.schemas.insert(key, compiled.clone());
        Ok(SchemaCheck(compiled))
    }
}

/// A compiled schema, checking documents.
struct SchemaCheck(Arc<jsonschema::Validator>);

impl SchemaCheck {
    /// `Invalid` on `content`, naming the JSON path (a JSON Pointer) of the
    /// first failure, what failed and the schema keyword, and how many more
    /// failures there are.
    fn check(&self, doc: &Value) -> Result<(), StoreError> {
        let mut errors = self.0.iter_errors(doc);
        let Some(first) = errors.next() else { return Ok(()) };
        let more = errors.count();
        let path = first.instance_path().as_str();
        let at = if path.is_empty() { "the top level".to_owned() } else { format!("`{path}`") };
        let mut reason = format!("at {at}: {} (schema `{}`)", clip(&first.to_string()), first.schema_path().as_str());
        if more > 0 {
            reason.push_str(&format!(", and {more} more"));
        }
        Err(DomainError::new("content", reason).into())
    }
}

/// Compiles a JSON Schema as working memory uses it: the draft from
/// `$schema` (2020-12 when absent), checked against its meta-schema, and no
/// external reference resolved (no network or file is ever read for it).
fn compile(schema: &Value) -> Result<jsonschema::Validator, StoreError> {
    jsonschema::options().with_retriever(NoRetrieval).build(schema).map_err(|e| {
        DomainError::new(
            "memory.working_memory.schema",
            format!("is not a usable JSON Schema: {}", clip(&e.to_string())),
        )
        .into()
    })
}

/// Checks that an agent's working-memory schema compiles (called on agent
/// create and update, so a schema that cannot be used is a 400 then, not
/// later).
///
/// # Errors
/// `Invalid` on `memory.working_memory.schema`.
pub fn check_agent_schema(memory: &memlayer_domain::MemoryOptions) -> Result<(), StoreError> {
    if let Some(WorkingMemoryOptions { format: WorkingFormat::Json { schema: Some(schema) }, .. }) =
        &memory.working_memory
    {
        compile(schema)?;
    }
    Ok(())
}

/// Refuses every external `$ref`.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external references are not resolved (`{uri}`): put every definition in the schema").into())
    }
}

/// A merge patch of a Markdown document: the request is well formed, the
/// document's state refuses it (409, like a stale version).
/// `PreconditionFailed` unless the document is at `if_match` (when given).
fn precondition(if_match: Option<StateVersion>, current: StateVersion) -> Result<(), StoreError> {
    match if_match {
        Some(expected) if expected != current => Err(StoreError::PreconditionFailed(format!(
            "working memory is at version {current}, If-Match asked for {expected}; nothing was written"
        ))),
        _ => Ok(()),
    }
}

/// The document moved past `if_match` between the read and the write.
fn moved_on(if_match: Option<StateVersion>) -> StoreError {
    StoreError::PreconditionFailed(format!(
        "working memory moved past version {} while writing; nothing was written",
        if_match.unwrap_or_default()
    ))
}

fn markdown_patch() -> StoreError {
    StoreError::Conflict(
        "a merge patch (RFC 7396) applies to a JSON document; this one is Markdown: replace it with PUT".into(),
    )
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most 300 characters of a message that may quote the document.
fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let head: String = s.chars().take(MAX).collect();
    format!("{head}…")
}

/// Waits before attempt `attempt + 1`: a random time up to 2 ms × 2^attempt,
/// at most 64 ms, so writers that collided do not collide again in step.
async fn backoff(attempt: u32) {
    let cap_us = 2_000u64 << attempt.min(5);
    let jitter = getrandom::u64().unwrap_or(cap_us / 2) % cap_us;
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}
