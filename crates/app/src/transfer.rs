//! [`TransferService`]: a tenant's memory exported as a stream of
//! [`Record`]s and imported back, keeping ids (issue 14). The wire format
//! (JSON Lines, docs/EXPORT.md) belongs to `memlayer-api`; here records are
//! domain types.
//!
//! An export reads through [`TransferStore`] in keyset pages and hands each
//! record to a [`RecordSink`] as it goes, so it holds one page at a time.
//! An [`Importer`] takes records in file order with their line numbers and
//! imports a thread when its block ends (the next thread, a catalog record
//! or the end record), in one transaction: a bad record anywhere in the
//! block leaves the thread unimported. Vectors of the store's model are
//! stored as given and fed to the vector index; every other imported
//! message is embedded by the worker, like an appended one.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use memlayer_domain::{
    AgentConfig, AgentState, Embedding, Message, MessageId, ModelConfig, Reach, ResourceId, Setting, Summary, TenantId,
    Thread, ThreadId, Timestamp, ToolConfig, WorkingMemory, WorkingScope,
};
use memlayer_ports::{
    Differs, EmbeddingStore, Imported, StoreError, ThreadRecords, ThreadStore, TransferStore, VectorEntry, VectorIndex,
};

use crate::{EmbeddingWorker, Limiter};

/// The newest export format this memlayer reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// Threads, messages and vector pages read per call.
const PAGE: u32 = 1_000;

/// The embedding model of an export's vectors (the exporting store's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportModel {
    /// The model name recorded with vectors.
    pub model: String,
    /// Its dimension.
    pub dim: usize,
}

/// An export's first record.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The format version ([`FORMAT_VERSION`] when written here).
    pub version: u32,
    /// The exporting memlayer's version.
    pub memlayer_version: String,
    /// The exported tenant.
    pub tenant: TenantId,
    /// When the export started.
    pub exported_at: Timestamp,
    /// The exporting store's embedding model.
    pub embedding: ExportModel,
    /// Whether vector records follow each thread's messages.
    pub vectors: bool,
    /// The resource the export was narrowed to.
    pub resource_id: Option<ResourceId>,
    /// The thread the export was narrowed to.
    pub thread_id: Option<ThreadId>,
}

/// What an export's last record counts (the records before it, header
/// included, and some of them by kind), so an import notices a file that
/// lost lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Records before the end record.
    pub records: u64,
    /// Thread records.
    pub threads: u64,
    /// Message records.
    pub messages: u64,
    /// Vector records.
    pub vectors: u64,
}

/// One record of an export, in file order: the header, the catalog
/// (models, tools, agents, settings), resources' working memory, then
/// each thread followed by its messages, vectors, agent states, summaries
/// and working memory, and the end.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The first record.
    Header(Header),
    /// A catalog model.
    Model(ModelConfig),
    /// A catalog tool.
    Tool(ToolConfig),
    /// A catalog agent.
    Agent(AgentConfig),
    /// A catalog setting.
    Setting(Setting),
    /// A working-memory version (a resource's, or the current thread's).
    Working(WorkingMemory),
    /// A thread; the records of its block follow.
    Thread(Thread),
    /// A message of the current thread.
    Message(Message),
    /// A stored vector of a message of the current thread.
    Vector(VectorEntry),
    /// An agent state of the current thread.
    State(AgentState),
    /// A summary version of the current thread.
    Summary(Summary),
    /// The last record.
    End(Totals),
}

/// What an export covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Only this resource's threads and working memory (no catalog).
    pub resource: Option<ResourceId>,
    /// Only this thread (no catalog, no resource working memory).
    pub thread: Option<ThreadId>,
    /// Include stored vectors.
    pub vectors: bool,
}

/// Where an export's records go.
#[async_trait]
pub trait RecordSink: Send {
    /// Takes the next record; an error stops the export.
    async fn put(&mut self, record: Record) -> Result<(), StoreError>;
}

/// A sink counting what goes through it.
struct Out<'a> {
    sink: &'a mut dyn RecordSink,
    totals: Totals,
}

impl Out<'_> {
    async fn put(&mut self, record: Record) -> Result<(), StoreError> {
        self.totals.records += 1;
        match &record {
            Record::Thread(_) => self.totals.threads += 1,
            Record::Message(_) => self.totals.messages += 1,
            Record::Vector(_) => self.totals.vectors += 1,
            _ => {}
        }
        self.sink.put(record).await
    }
}

/// Exports and imports (`Services.transfer`).
#[derive(Debug, Clone)]
pub struct TransferService {
    store: Arc<dyn TransferStore>,
    threads: Arc<dyn ThreadStore>,
    embeddings: Arc<dyn EmbeddingStore>,
    index: Arc<dyn VectorIndex>,
    worker: Option<EmbeddingWorker>,
    limiter: Limiter,
    model: ExportModel,
}

impl TransferService {
    /// The service over `store`; imported vectors of `model` go to
    /// `embeddings` and `index`.
    #[must_use]
    pub fn new(
        store: Arc<dyn TransferStore>,
        threads: Arc<dyn ThreadStore>,
        embeddings: Arc<dyn EmbeddingStore>,
        index: Arc<dyn VectorIndex>,
        model: ExportModel,
    ) -> Self {
        Self { store, threads, embeddings, index, worker: None, limiter: Limiter::unlimited(), model }
    }

    /// Wakes `worker` after imports that left messages to embed.
    #[must_use]
    pub fn with_worker(mut self, worker: EmbeddingWorker) -> Self {
        self.worker = Some(worker);
        self
    }

    /// Holds imports to the tenant's storage quota ([`Limiter::quota`]).
    #[must_use]
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// The store's embedding model.
    #[must_use]
    pub fn model(&self) -> &ExportModel {
        &self.model
    }

    /// Writes `who`'s memory to `sink`: the tenant's, narrowed by
    /// `options`, and for a caller bound to a resource only that
    /// resource's (another resource's export is empty; the catalog is left
    /// out). Returns what the end record counts.
    ///
    /// # Errors
    /// `NotFound` for a thread `who` cannot reach; a failed read; the sink's
    /// error.
    pub async fn export(
        &self,
        who: &(dyn Reach + 'static),
        options: &ExportOptions,
        sink: &mut dyn RecordSink,
    ) -> Result<Totals, StoreError> {
        let tenant = who.tenant().clone();
        let bound = who.resource().cloned();
        let resource = bound.clone().or_else(|| options.resource.clone());
        let foreign = matches!((&bound, &options.resource), (Some(b), Some(r)) if b != r);
        let header = Header {
            version: FORMAT_VERSION,
            memlayer_version: env!("CARGO_PKG_VERSION").to_owned(),
            tenant: tenant.clone(),
            exported_at: memlayer_domain::now(),
            embedding: self.model.clone(),
            vectors: options.vectors,
            resource_id: options.resource.clone(),
            thread_id: options.thread,
        };
        let mut out = Out { sink, totals: Totals::default() };
        out.put(Record::Header(header)).await?;
        if !foreign {
            if bound.is_none() && options.resource.is_none() && options.thread.is_none() {
                let catalog = self.store.export_catalog(&tenant).await?;
                for r in catalog.models {
                    out.put(Record::Model(r)).await?;
                }
                for r in catalog.tools {
                    out.put(Record::Tool(r)).await?;
                }
                for r in catalog.agents {
                    out.put(Record::Agent(r)).await?;
                }
                for r in catalog.settings {
                    out.put(Record::Setting(r)).await?;
                }
            }
            if options.thread.is_none() {
                let mut after = None;
                loop {
                    let page = self.store.export_resource_working(who, resource.clone(), after, PAGE).await?;
                    let Some(last) = page.last() else { break };
                    after = match &last.scope {
                        WorkingScope::Resource(r) => Some((r.clone(), last.version)),
                        WorkingScope::Thread(_) => return Err(StoreError::backend("a thread scope in resource pages")),
                    };
                    for w in page {
                        out.put(Record::Working(w)).await?;
                    }
                }
            }
            let mut after = None;
            loop {
                let threads = match options.thread {
                    Some(id) if after.is_none() => {
                        let t = self.threads.get(who, id).await?;
                        if !who.reaches(t.resource_id.as_ref())
                            || resource.as_ref().is_some_and(|r| t.resource_id.as_ref() != Some(r))
                        {
                            return Err(StoreError::not_found("thread", id));
                        }
                        vec![t]
                    }
                    Some(_) => Vec::new(),
                    None => self.store.export_threads(who, resource.clone(), after, PAGE).await?,
                };
                let Some(last) = threads.last() else { break };
                after = Some(last.id);
                for thread in threads {
                    self.export_thread(who, thread, options.vectors, &mut out).await?;
                }
            }
        }
        let end = out.totals;
        out.put(Record::End(end)).await?;
        Ok(end)
    }

    async fn export_thread(
        &self,
        who: &(dyn Reach + 'static),
        thread: Thread,
        vectors: bool,
        out: &mut Out<'_>,
    ) -> Result<(), StoreError> {
        let (id, last_seq) = (thread.id, thread.last_seq);
        out.put(Record::Thread(thread)).await?;
        match self.export_contents(who, id, last_seq, vectors, out).await {
            // Deleted since its record was written: its block ends here.
            Err(StoreError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// A thread's block after its record: everything as of the thread
    /// record's `last_seq`, so a thread appended to during the export still
    /// holds together (its newer messages, and summaries covering them, are
    /// left out).
    async fn export_contents(
        &self,
        who: &(dyn Reach + 'static),
        id: ThreadId,
        last_seq: i64,
        vectors: bool,
        out: &mut Out<'_>,
    ) -> Result<(), StoreError> {
        let mut after = 0;
        'pages: while after < last_seq {
            let page = self.store.export_messages(who, id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for m in page {
                if m.seq > last_seq {
                    break 'pages;
                }
                out.put(Record::Message(m)).await?;
            }
        }
        if vectors {
            let mut after = 0;
            while after < last_seq {
                let span = u32::try_from((last_seq - after).min(i64::from(PAGE))).unwrap_or(PAGE);
                for (_, v) in self.store.export_vectors(who, id, after, span).await? {
                    out.put(Record::Vector(v)).await?;
                }
                after += i64::from(span);
            }
        }
        let extras = self.store.export_thread_extras(who, id).await?;
        for s in extras.states {
            out.put(Record::State(s)).await?;
        }
        for s in extras.summaries.into_iter().filter(|s| s.covers_through <= last_seq) {
            out.put(Record::Summary(s)).await?;
        }
        for w in extras.working {
            out.put(Record::Working(w)).await?;
        }
        Ok(())
    }

    /// An importer of records for `who` (a caller bound to a resource may
    /// import only that resource's threads and working memory, and no
    /// catalog).
    #[must_use]
    pub fn importer(&self, who: Arc<dyn Reach + Send + Sync + 'static>) -> Importer {
        Importer {
            service: self.clone(),
            who,
            header: None,
            seen: Totals::default(),
            pending: None,
            resource: Vec::new(),
            resource_line: 0,
            ended: false,
            last_line: 0,
            report: ImportReport::default(),
            catalog: true,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Threads stored (with their contents).
    pub threads_created: u64,
    /// Threads already stored alike.
    pub threads_unchanged: u64,
    /// Messages stored.
    pub messages_created: u64,
    /// Vectors stored as given.
    pub vectors_stored: u64,
    /// Imported messages left for the worker to embed.
    pub embeddings_queued: u64,
    /// Catalog records and resource documents stored.
    pub records_created: u64,
    /// Catalog records and resource documents already stored alike.
    pub records_unchanged: u64,
}

/// Why an import stopped.
#[derive(Debug)]
pub enum ImportFailure {
    /// A record is malformed or does not fit (400).
    Invalid,
    /// A record's id is stored with other content (409).
    Conflict,
    /// The caller may not import this record (403).
    Forbidden,
    /// The store failed or refused (its own status).
    Store(Box<StoreError>),
}

/// An import's error: the line, the field, what is wrong, and what was
/// imported before it (threads before the line are stored; the thread
/// whose block holds the line is not).
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {field}: {message}")]
pub struct ImportError {
    /// 1-based line number.
    pub line: u64,
    /// The field (or `type`, `json`, `end`).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The kind.
    pub failure: ImportFailure,
    /// What was imported before it.
    pub report: Box<ImportReport>,
}

impl ImportError {
    /// An invalid record at `line`.
    #[must_use]
    pub fn invalid(line: u64, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line,
            field: field.into(),
            message: message.into(),
            failure: ImportFailure::Invalid,
            report: Box::default(),
        }
    }
}

#[derive(Debug)]
struct Pending {
    line: u64,
    records: ThreadRecords,
    message_lines: HashMap<MessageId, u64>,
    vectors: Vec<(u64, MessageId, Embedding)>,
}

/// Imports records in file order ([`TransferService::importer`]); call
/// [`Importer::push`] for each, then [`Importer::finish`].
pub struct Importer {
    service: TransferService,
    who: Arc<dyn Reach + Send + Sync + 'static>,
    header: Option<Header>,
    seen: Totals,
    pending: Option<Pending>,
    resource: Vec<WorkingMemory>,
    resource_line: u64,
    ended: bool,
    last_line: u64,
    report: ImportReport,
    catalog: bool,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer").field("report", &self.report).finish_non_exhaustive()
    }
}

impl Importer {
    /// Whether catalog records may be imported (default true; an HTTP
    /// caller needs the `admin` scope for them).
    #[must_use]
    pub fn with_catalog(mut self, allowed: bool) -> Self {
        self.catalog = allowed;
        self
    }

    /// What was imported so far.
    #[must_use]
    pub fn report(&self) -> ImportReport {
        self.report
    }

    fn fail(&self, line: u64, field: &str, message: impl Into<String>, failure: ImportFailure) -> ImportError {
        ImportError { line, field: field.to_owned(), message: message.into(), failure, report: Box::new(self.report) }
    }

    fn invalid(&self, line: u64, field: &str, message: impl Into<String>) -> ImportError {
        self.fail(line, field, message, ImportFailure::Invalid)
    }

    /// Takes the record on `line`.
    ///
    /// # Errors
    /// [`ImportError`] naming the line (this record's, or a record of the
    /// thread it completes) and field; the importer must not be used after.
    pub async fn push(&mut self, line: u64, record: Record) -> Result<(), ImportError> {
        self.last_line = line;
        if self.ended {
            return Err(self.invalid(line, "type", "a record after the end record"));
        }
        let tenant = self.who.tenant().clone();
        let bound = self.who.resource().cloned();
        if self.header.is_none() {
            let Record::Header(h) = record else {
                return Err(self.invalid(line, "type", "the first record must be the header"));
            };
            if h.version > FORMAT_VERSION {
                return Err(self.invalid(
                    line,
                    "version",
                    format!(
                        "format version {} is newer than this memlayer reads ({FORMAT_VERSION}): upgrade memlayer",
                        h.version
                    ),
                ));
            }
            if h.version == 0 {
                return Err(self.invalid(line, "version", "format versions start at 1"));
            }
            self.header = Some(h);
            self.seen.records += 1;
            return Ok(());
        }
        match &record {
            Record::Thread(_) => self.seen.threads += 1,
            Record::Message(_) => self.seen.messages += 1,
            Record::Vector(_) => self.seen.vectors += 1,
            _ => {}
        }
        if !matches!(record, Record::End(_)) {
            self.seen.records += 1;
        }
        let catalog_tenant = match &record {
            Record::Model(r) => Some(&r.tenant),
            Record::Tool(r) => Some(&r.tenant),
            Record::Agent(r) => Some(&r.tenant),
            Record::Setting(r) => Some(&r.tenant),
            _ => None,
        };
        if let Some(of) = catalog_tenant {
            self.flush().await?;
            if of != &tenant {
                return Err(self.invalid(line, "tenant", format!("the record belongs to tenant `{}`", of.as_str())));
            }
            if bound.is_some() || !self.catalog {
                return Err(self.fail(
                    line,
                    "type",
                    "catalog records need the `admin` scope and a credential of the whole tenant",
                    ImportFailure::Forbidden,
                ));
            }
        }
        let store = &self.service.store;
        let done = match record {
            Record::Header(_) => return Err(self.invalid(line, "type", "a second header")),
            Record::Model(r) => store.import_model(&tenant, r).await,
            Record::Tool(r) => store.import_tool(&tenant, r).await,
            Record::Agent(r) => store.import_agent(&tenant, r).await,
            Record::Setting(r) => store.import_setting(&tenant, r).await,
            Record::Working(w) => return self.working(line, w).await,
            Record::Thread(t) => {
                self.flush().await?;
                if t.tenant != tenant {
                    return Err(self.invalid(
                        line,
                        "tenant",
                        format!("the thread belongs to tenant `{}`, not `{}`", t.tenant.as_str(), tenant.as_str()),
                    ));
                }
                if !self.who.reaches(t.resource_id.as_ref()) {
                    return Err(self.fail(
                        line,
                        "resource_id",
                        "the thread belongs to another resource than the caller's",
                        ImportFailure::Forbidden,
                    ));
                }
                self.pending = Some(Pending {
                    line,
                    records: ThreadRecords {
                        thread: t,
                        messages: Vec::new(),
                        states: Vec::new(),
                        summaries: Vec::new(),
                        working: Vec::new(),
                    },
                    message_lines: HashMap::new(),
                    vectors: Vec::new(),
                });
                return Ok(());
            }
            Record::Message(m) => {
                let p = self.current(line, m.thread_id)?;
                // An id twice in one thread's block is refused on its second
                // line, before anything of the thread is stored (an export
                // never repeats one; the store would refuse it only without
                // naming the line).
                if let Some(first) = p.message_lines.get(&m.id).copied() {
                    let what = if p.records.messages.iter().any(|kept| kept == &m) {
                        "the same record again"
                    } else {
                        "with other content"
                    };
                    return Err(self.invalid(
                        line,
                        "id",
                        format!("message {} is on line {first} already ({what}): ids are unique", m.id),
                    ));
                }
                p.message_lines.insert(m.id, line);
                p.records.messages.push(m);
                return Ok(());
            }
            Record::Vector(v) => {
                let p = self.current(line, v.thread)?;
                if !p.message_lines.contains_key(&v.id) {
                    return Err(self.invalid(
                        line,
                        "message_id",
                        format!("message {} precedes no vector in its thread", v.id),
                    ));
                }
                p.vectors.push((line, v.id, v.embedding));
                return Ok(());
            }
            Record::State(s) => {
                let p = self.current(line, s.thread_id)?;
                p.records.states.push(s);
                return Ok(());
            }
            Record::Summary(s) => {
                let p = self.current(line, s.thread_id)?;
                p.records.summaries.push(s);
                return Ok(());
            }
            Record::End(totals) => {
                self.flush().await?;
                if totals != self.seen {
                    return Err(self.invalid(
                        line,
                        "records",
                        format!("the end record counts {totals:?} but the file holds {:?}: lines were lost", self.seen),
                    ));
                }
                self.ended = true;
                return Ok(());
            }
        };
        self.settle(line, done).map(drop)
    }

    /// The pending thread when `thread` is its id.
    fn current(&mut self, line: u64, thread: ThreadId) -> Result<&mut Pending, ImportError> {
        match &self.pending {
            Some(p) if p.records.thread.id == thread => {}
            _ => {
                return Err(self.invalid(
                    line,
                    "thread_id",
                    format!("thread {thread}'s record is not inside its thread's block (after its thread record)"),
                ));
            }
        }
        Ok(self.pending.as_mut().expect("checked above"))
    }

    async fn working(&mut self, line: u64, w: WorkingMemory) -> Result<(), ImportError> {
        match &w.scope {
            WorkingScope::Thread(thread) => {
                let p = self.current(line, *thread)?;
                p.records.working.push(w);
                Ok(())
            }
            WorkingScope::Resource(r) => {
                self.flush_thread().await?;
                if !self.who.reaches(Some(r)) {
                    return Err(self.fail(
                        line,
                        "scope",
                        "working memory of another resource than the caller's",
                        ImportFailure::Forbidden,
                    ));
                }
                if self.resource.first().is_some_and(|first| first.scope != w.scope) {
                    self.flush_resource().await?;
                }
                if self.resource.is_empty() {
                    self.resource_line = line;
                }
                self.resource.push(w);
                Ok(())
            }
        }
    }

    /// Maps an import's answer to the report or an error at `line`.
    fn settle(&mut self, line: u64, done: Result<Imported, StoreError>) -> Result<Imported, ImportError> {
        match done {
            Ok(Imported::Created) => {
                self.report.records_created += 1;
                Ok(Imported::Created)
            }
            Ok(Imported::Unchanged) => {
                self.report.records_unchanged += 1;
                Ok(Imported::Unchanged)
            }
            Ok(Imported::Differs(d)) => Err(self.differs(line, &d, None)),
            Err(e) => Err(self.store_error(line, e)),
        }
    }

    fn differs(&self, line: u64, d: &Differs, lines: Option<&HashMap<MessageId, u64>>) -> ImportError {
        let (line, field, what) = match d {
            Differs::Thread { field } => (line, *field, "the thread is stored with another".to_owned()),
            Differs::Record { field } => (line, *field, "the record's id is stored with another".to_owned()),
            Differs::Message { id, field } => {
                let at = lines.and_then(|l| l.get(id).copied()).unwrap_or(line);
                if *field == "missing" {
                    (at, "id", format!("message {id} is not in the stored thread, which the file says holds it"))
                } else {
                    (at, *field, format!("message {id} is stored with another"))
                }
            }
        };
        let message = if field == "id" { what } else { format!("{what} `{field}` (importing never overwrites)") };
        self.fail(line, field, message, ImportFailure::Conflict)
    }

    fn store_error(&self, line: u64, e: StoreError) -> ImportError {
        match e {
            StoreError::Invalid(d) => self.invalid(line, d.field, d.reason),
            StoreError::Conflict(m) => self.fail(line, "id", m, ImportFailure::Conflict),
            other => self.fail(line, "record", other.to_string(), ImportFailure::Store(Box::new(other))),
        }
    }

    async fn flush(&mut self) -> Result<(), ImportError> {
        self.flush_thread().await?;
        self.flush_resource().await
    }

    async fn flush_resource(&mut self) -> Result<(), ImportError> {
        if self.resource.is_empty() {
            return Ok(());
        }
        let versions = std::mem::take(&mut self.resource);
        let done = self.service.store.import_resource_working(&*self.who, versions).await;
        self.settle(self.resource_line, done).map(drop)
    }

    async fn flush_thread(&mut self) -> Result<(), ImportError> {
        let Some(p) = self.pending.take() else { return Ok(()) };
        let quota = self.service.limiter.quota(self.who.tenant()).await;
        let messages = p.records.messages.len() as u64;
        let model = &self.service.model;
        let with_vector: std::collections::HashSet<MessageId> = p
            .vectors
            .iter()
            .filter(|(_, _, e)| e.model() == model.model && e.dim() == model.dim)
            .map(|(_, id, _)| *id)
            .collect();
        // What the worker will embed, charged like an append's work once the
        // thread is stored (a re-import, which stores nothing, costs nothing).
        let cost = crate::embedding_cost(
            p.records.messages.iter().filter(|m| !with_vector.contains(&m.id)).map(|m| m.content.as_str()),
        );
        let done = self.service.store.import_thread(&*self.who, p.records, &quota).await;
        let outcome = match done {
            Ok(Imported::Differs(d)) => return Err(self.differs(p.line, &d, Some(&p.message_lines))),
            Ok(o) => o,
            Err(e) => return Err(self.store_error(p.line, e)),
        };
        if outcome == Imported::Unchanged {
            self.report.threads_unchanged += 1;
            return Ok(());
        }
        self.report.threads_created += 1;
        self.report.messages_created += messages;
        let usable: Vec<(MessageId, Embedding)> = p
            .vectors
            .into_iter()
            .filter(|(_, _, e)| e.model() == model.model && e.dim() == model.dim)
            .map(|(_, id, e)| (id, e))
            .collect();
        let embedded = usable.len() as u64;
        if !usable.is_empty() {
            let entries =
                self.service.embeddings.complete_jobs(usable).await.map_err(|e| self.store_error(p.line, e))?;
            self.report.vectors_stored += entries.len() as u64;
            self.service.index.upsert(entries).await.map_err(|e| self.store_error(p.line, e))?;
        }
        let queued = messages.saturating_sub(embedded);
        self.report.embeddings_queued += queued;
        if queued > 0
            && let Some(w) = &self.service.worker
        {
            w.wake();
        }
        // Past the tenant's embedding budget the import stops here (429),
        // this thread stored: sending the file again later goes on from it.
        let tenant = self.who.tenant().clone();
        self.service.limiter.charge_embedding(&tenant, cost).await.map_err(|e| self.store_error(p.line, e))?;
        Ok(())
    }

    /// Imports what is pending and checks the file ended with its end
    /// record.
    ///
    /// # Errors
    /// [`ImportError`]: a pending record's, or on the line after the last
    /// when the end record is missing (a truncated file; the last thread
    /// is then not imported).
    pub async fn finish(mut self) -> Result<ImportReport, ImportError> {
        if self.header.is_none() {
            return Err(self.invalid(1, "type", "an empty file: the first record must be the header"));
        }
        if !self.ended {
            return Err(self.invalid(
                self.last_line + 1,
                "end",
                "the file ends without its end record: it is truncated; the last thread in it was not imported",
            ));
        }
        self.flush().await?;
        Ok(self.report)
    }
}
