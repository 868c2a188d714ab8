//! The memory use cases ([`MemoryService`]): threads, messages and agent
//! state over the storage ports, and an agent's memory options read back from
//! its thread.

use std::sync::Arc;

use memlayer_domain::{
    AgentName, AgentState, Cursor, Direction, ForkThread, MEMORY_METADATA_KEY, MemoryOptions, Message, MessageId,
    Metadata, NewMessage, NewThread, Page, PageSize, Quota, Reach, StateVersion, TenantId, Thread, ThreadFilter,
    ThreadId, ThreadPatch, TokenCount, Usage, parse_model,
};
use memlayer_ports::{MessageStore, StateStore, StoreError, ThreadStore, TokenCounter, UsageStore, VectorIndex};

use crate::{CatalogService, EmbeddingWorker, Limiter, ThreadSweeper};
use serde_json::Value;

/// How an append treats token counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// Count tokens of every message: `Some(true)` or `Some(false)` decide,
    /// `None` follows the configured default (`memory.count_tokens`).
    pub count_tokens: Option<bool>,
    /// The model whose tokenizer counts; defaults to the thread's model.
    pub model: Option<String>,
}

/// The memory use cases: threads, messages, token counts and agent state,
/// over whatever adapters [`crate::build`] wired.
#[derive(Debug, Clone)]
pub struct MemoryService {
    threads: Arc<dyn ThreadStore>,
    messages: Arc<dyn MessageStore>,
    states: Arc<dyn StateStore>,
    tokens: Arc<dyn TokenCounter>,
    default_tenant: TenantId,
    count_tokens_by_default: bool,
    semantic: Option<Semantic>,
    sweeper: Option<ThreadSweeper>,
    catalog: Option<CatalogService>,
    max_response_bytes: usize,
    limiter: Limiter,
    summary_trigger: Option<crate::SummaryTrigger>,
    usage: Option<Arc<dyn UsageStore>>,
}

/// A tenant's storage and its quota ([`MemoryService::usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: TenantId,
    /// What it stores.
    pub usage: Usage,
    /// The most it may store (`None`: unlimited).
    pub quota: Quota,
}

/// What appends and deletes must keep in step with: the vector index and
/// the embedding worker.
#[derive(Debug, Clone)]
struct Semantic {
    index: Arc<dyn VectorIndex>,
    worker: EmbeddingWorker,
    inline: bool,
}

impl MemoryService {
    /// Assembles the service from ports (the app's own wiring uses
    /// [`crate::build`]; tests and embedders may pass their own adapters).
    #[must_use]
    pub fn new(
        threads: Arc<dyn ThreadStore>,
        messages: Arc<dyn MessageStore>,
        states: Arc<dyn StateStore>,
        tokens: Arc<dyn TokenCounter>,
        default_tenant: TenantId,
        count_tokens_by_default: bool,
    ) -> Self {
        Self {
            threads,
            messages,
            states,
            tokens,
            default_tenant,
            count_tokens_by_default,
            semantic: None,
            sweeper: None,
            catalog: None,
            max_response_bytes: crate::DEFAULT_MAX_RESPONSE_BYTES,
            limiter: Limiter::unlimited(),
            summary_trigger: None,
            usage: None,
        }
    }

    /// Reads tenants' storage from `usage` for [`MemoryService::usage`].
    #[must_use]
    pub fn with_usage(mut self, usage: Arc<dyn UsageStore>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Charges the embedding work of appended messages to their tenant's
    /// budget (`limits.embed_tokens`) when embeddings are on, and holds
    /// creates and appends to the tenant's storage quota
    /// ([`Limiter::quota`]); the default charges nothing and has no quota.
    #[must_use]
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Bounds the bytes of messages one page returns (by
    /// [`Message::approx_bytes`]; at least one message always); the default
    /// is [`crate::DEFAULT_MAX_RESPONSE_BYTES`].
    #[must_use]
    pub fn with_max_response_bytes(mut self, max_bytes: usize) -> Self {
        self.max_response_bytes = max_bytes;
        self
    }

    /// Gives threads created for an agent in the catalog that agent's memory
    /// options (see [`MemoryService::create_thread`]).
    #[must_use]
    pub fn with_catalog(mut self, catalog: CatalogService) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Keeps the vector index in step with deletes and wakes (or, when
    /// `inline`, awaits) the embedding worker after appends.
    #[must_use]
    pub fn with_semantic(mut self, index: Arc<dyn VectorIndex>, worker: EmbeddingWorker, inline: bool) -> Self {
        self.semantic = Some(Semantic { index, worker, inline });
        self
    }

    /// Wakes `sweeper` after every thread delete, so the deleted thread's
    /// rows are removed in the background at once.
    #[must_use]
    pub fn with_sweeper(mut self, sweeper: ThreadSweeper) -> Self {
        self.sweeper = Some(sweeper);
        self
    }

    /// Reports every append to `trigger` (in memory, no I/O on the append
    /// path), which summarises threads whose unsummarised part passes
    /// `summary.threshold_tokens`.
    #[must_use]
    pub fn with_summary_trigger(mut self, trigger: crate::SummaryTrigger) -> Self {
        self.summary_trigger = Some(trigger);
        self
    }

    /// The tenant used when a caller names none.
    #[must_use]
    pub fn default_tenant(&self) -> &TenantId {
        &self.default_tenant
    }

    /// Creates a thread.
    ///
    /// When `agent_id` names an agent configured for the tenant (by its
    /// name) and the metadata has no [`MEMORY_METADATA_KEY`] entry, the
    /// agent's memory options are copied there (`{"last_n", "top_k",
    /// "token_budget"}`, only those set), where [`MemoryService::memory_options`]
    /// finds them. An `agent_id` naming no agent in the catalog is allowed
    /// (agents may live outside memlayer) and adds nothing.
    ///
    /// A caller bound to a resource creates threads of that resource only:
    /// without a `resource_id` the thread gets it.
    ///
    /// The thread counts against the tenant's storage quota (`threads`).
    ///
    /// # Errors
    /// As [`ThreadStore::create_within`] (`QuotaExceeded` past the quota),
    /// and `Forbidden` when a caller bound to a resource names another.
    pub async fn create_thread(&self, who: &(impl Reach + 'static), mut new: NewThread) -> Result<Thread, StoreError> {
        let tenant = who.tenant();
        if let Some(bound) = who.resource() {
            match &new.resource_id {
                None => new.resource_id = Some(bound.clone()),
                Some(r) if r == bound => {}
                Some(r) => {
                    return Err(StoreError::Forbidden(format!(
                        "resource_id: this credential is bound to resource `{bound}` and cannot create a thread of \
                         `{r}`; leave resource_id out or name `{bound}`"
                    )));
                }
            }
        }
        if let Some(model) = &new.model {
            parse_model(model)?;
        }
        if let (Some(catalog), Some(agent)) = (&self.catalog, &new.agent_id)
            && !new.metadata.as_map().contains_key(MEMORY_METADATA_KEY)
            && let Some(configured) = catalog.agent_by_name(tenant, agent).await?
            && !configured.spec.memory.is_empty()
        {
            let mut map = new.metadata.into_map();
            map.insert(MEMORY_METADATA_KEY.to_owned(), configured.spec.memory.to_value());
            new.metadata = Metadata::from_value(Value::Object(map))?;
        }
        let quota = self.limiter.quota(tenant).await;
        self.threads.create_within(who, new, &quota).await
    }

    /// What the caller's tenant stores (live threads, their messages and
    /// the messages' bytes) and its quota.
    ///
    /// # Errors
    /// `Forbidden` for a caller bound to a resource (the figures cover the
    /// whole tenant); as [`UsageStore::usage`].
    pub async fn usage(&self, who: &(impl Reach + 'static)) -> Result<TenantUsage, StoreError> {
        if let Some(bound) = who.resource() {
            return Err(StoreError::Forbidden(format!(
                "this credential is bound to resource `{bound}`, and usage covers the whole tenant; use a \
                 credential of the whole tenant"
            )));
        }
        let Some(store) = &self.usage else {
            return Err(StoreError::backend("MemoryService was built without a UsageStore (with_usage)"));
        };
        let tenant = who.tenant();
        let (usage, quota) = (store.usage(tenant).await?, self.limiter.quota(tenant).await);
        Ok(TenantUsage { tenant: tenant.clone(), usage, quota })
    }

    /// The memory options a thread carries (from its agent at creation, or
    /// written by the caller under [`MEMORY_METADATA_KEY`]); empty when none.
    ///
    /// # Errors
    /// `NotFound` when the thread does not exist for this tenant.
    pub async fn memory_options(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
    ) -> Result<MemoryOptions, StoreError> {
        Ok(MemoryOptions::from_metadata(&self.get_thread(who, thread).await?.metadata))
    }

    /// For a caller bound to a resource, `NotFound` unless `thread` is one
    /// of that resource's (one thread read); for any other caller nothing
    /// is read: the stores' tenant scoping is the whole check.
    async fn check_reach(&self, who: &(impl Reach + 'static), thread: ThreadId) -> Result<(), StoreError> {
        if who.resource().is_some() {
            self.get_thread(who, thread).await?;
        }
        Ok(())
    }

    /// How many messages a page or a "last messages" read returns: `limit`,
    /// else the thread's `last_n` memory option (from its agent), else the
    /// default page size (50).
    async fn limit_or_last_n(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        limit: Option<PageSize>,
    ) -> Result<PageSize, StoreError> {
        match limit {
            Some(n) => {
                self.check_reach(who, thread).await?;
                Ok(n)
            }
            None => match self.memory_options(who, thread).await?.last_n {
                Some(last) => Ok(PageSize::new(last)?),
                None => Ok(PageSize::default()),
            },
        }
    }

    /// One thread.
    ///
    /// # Errors
    /// `NotFound` when it does not exist for this tenant.
    pub async fn get_thread(&self, who: &(impl Reach + 'static), id: ThreadId) -> Result<Thread, StoreError> {
        let thread = self.threads.get(who, id).await?;
        if !who.reaches(thread.resource_id.as_ref()) {
            return Err(StoreError::not_found("thread", id));
        }
        Ok(thread)
    }

    /// A page of threads, newest first. A caller bound to a resource lists
    /// that resource's threads only; asking for another resource's gives
    /// an empty page.
    ///
    /// # Errors
    /// `Invalid` for a cursor of another listing.
    pub async fn list_threads(
        &self,
        who: &(impl Reach + 'static),
        filter: &ThreadFilter,
        cursor: Option<Cursor>,
        limit: PageSize,
    ) -> Result<Page<Thread>, StoreError> {
        let Some(bound) = who.resource() else {
            return self.threads.list(who, filter, cursor, limit).await;
        };
        match &filter.resource_id {
            Some(r) if r != bound => Ok(Page { items: Vec::new(), next_cursor: None }),
            _ => {
                let filter = ThreadFilter { resource_id: Some(bound.clone()), ..filter.clone() };
                self.threads.list(who, &filter, cursor, limit).await
            }
        }
    }

    /// Updates a thread.
    ///
    /// # Errors
    /// `NotFound`, `Invalid` for an unacceptable model name, or `Forbidden`
    /// when a caller bound to a resource would move the thread out of it.
    pub async fn update_thread(
        &self,
        who: &(impl Reach + 'static),
        id: ThreadId,
        patch: ThreadPatch,
    ) -> Result<Thread, StoreError> {
        if let Some(Some(model)) = &patch.model {
            parse_model(model)?;
        }
        if let Some(bound) = who.resource()
            && patch.resource_id.as_ref().is_some_and(|r| r.as_ref() != Some(bound))
        {
            return Err(StoreError::Forbidden(format!(
                "resource_id: this credential is bound to resource `{bound}` and cannot move a thread out of it"
            )));
        }
        self.check_reach(who, id).await?;
        self.threads.update(who, id, patch).await
    }

    /// Forks a thread ([`ThreadStore::fork`], one transaction): a new thread
    /// of the same resource, agent and model holding the source's messages
    /// up to `fork.at_seq()` (default: all of them) with new ids, their
    /// vectors, its agent states, summary and working memory as of `at_seq`,
    /// its metadata naming the
    /// source under [`memlayer_domain::FORKED_FROM_KEY`]. The copied vectors
    /// are added to the vector index before this returns (so the fork is
    /// found by vector search at once); copies without a vector are embedded
    /// by the worker, woken here (or awaited in inline mode).
    ///
    /// A caller bound to a resource forks only its own threads, and the fork
    /// keeps the source's resource. Copying existing vectors costs no
    /// embedding budget; copies without one are embedded later by the worker
    /// and are not charged to `limits.embed_tokens` either (the fork's size
    /// is known only inside its transaction).
    ///
    /// # Errors
    /// `NotFound` when the source does not exist for this caller, `Invalid`
    /// on `at_seq` when it lies beyond the thread's last message.
    pub async fn fork_thread(
        &self,
        who: &(impl Reach + 'static),
        source: ThreadId,
        fork: ForkThread,
    ) -> Result<Thread, StoreError> {
        self.check_reach(who, source).await?;
        let quota = self.limiter.quota(who.tenant()).await;
        let forked = self.threads.fork_within(who, source, fork, &quota).await?;
        if let Some(s) = &self.semantic {
            s.index.upsert(forked.vectors).await?;
            if forked.messages > 0 {
                if s.inline {
                    if let Err(e) = s.worker.drain().await {
                        tracing::warn!(error = %e, "inline embedding failed; the worker will retry");
                    }
                } else {
                    s.worker.wake();
                }
            }
        }
        Ok(forked.thread)
    }

    /// Deletes a thread with its messages and state: the thread is marked
    /// deleted in one short transaction, whatever its size, and is missing
    /// for every caller from then on; its entries leave the vector index
    /// before this returns; the sweeper (woken here) removes its rows in
    /// bounded chunks in the background.
    ///
    /// # Errors
    /// `NotFound` when it does not exist for this tenant (or is already
    /// deleted).
    pub async fn delete_thread(&self, who: &(impl Reach + 'static), id: ThreadId) -> Result<(), StoreError> {
        self.check_reach(who, id).await?;
        let tenant = who.tenant();
        self.threads.delete(who, id).await?;
        if let Some(s) = &self.sweeper {
            s.wake();
        }
        if let Some(s) = &self.semantic {
            s.index.remove_thread(tenant, id).await?;
        }
        Ok(())
    }

    /// Deletes one message of `thread` with its vector and index entry; the
    /// delete is acknowledged only once the index no longer returns it.
    ///
    /// # Errors
    /// `NotFound` when it does not exist for this tenant or belongs to
    /// another thread (which is left alone).
    pub async fn delete_message(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        id: MessageId,
    ) -> Result<(), StoreError> {
        self.check_reach(who, thread).await?;
        let found = self.messages.get(who, id).await?;
        if found.thread_id != thread {
            return Err(StoreError::not_found("message", format!("{id} of thread {thread}")));
        }
        self.messages.delete(who, id).await?;
        if let Some(s) = &self.semantic {
            s.index.remove(vec![id]).await?;
        }
        Ok(())
    }

    /// The model a thread's messages are counted for, as context assembly
    /// resolves it: the thread's own, else its agent's (from the catalog);
    /// `None` when neither is known.
    async fn thread_model(&self, tenant: &TenantId, thread: Option<Thread>) -> Result<Option<String>, StoreError> {
        let Some(thread) = thread else { return Ok(None) };
        if thread.model.is_some() {
            return Ok(thread.model);
        }
        let (Some(catalog), Some(name)) = (&self.catalog, &thread.agent_id) else { return Ok(None) };
        let Some(agent) = catalog.agent_by_name(tenant, name).await? else { return Ok(None) };
        Ok(Some(catalog.get_model(tenant, agent.spec.model_id).await?.spec.name))
    }

    /// Appends messages atomically, counting their tokens when asked.
    ///
    /// Token counting uses `options.model`, else the thread's model, else its
    /// agent's (the order context assembly follows); counting without any
    /// is `Invalid` and stores nothing. The text counted is the
    /// content plus, for assistant messages, each tool call's name and JSON
    /// arguments.
    ///
    /// The messages count against the tenant's storage quota (`messages`
    /// and `bytes`): a batch that does not fit stores none of its messages.
    ///
    /// # Errors
    /// As [`MessageStore::append_within`] (`QuotaExceeded` past the quota),
    /// plus `Invalid` when counting has no model.
    #[tracing::instrument(name = "memory.append", skip_all, fields(thread = %thread, messages = batch.len()))]
    pub async fn append_messages(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        batch: Vec<NewMessage>,
        options: AppendOptions,
    ) -> Result<Vec<Message>, StoreError> {
        let tenant = who.tenant();
        if batch.is_empty() || batch.len() > memlayer_domain::MAX_BATCH {
            return Err(memlayer_domain::DomainError::new(
                "messages",
                format!("a batch holds 1 to {} messages, got {}", memlayer_domain::MAX_BATCH, batch.len()),
            )
            .into());
        }
        let count = options.count_tokens.unwrap_or(self.count_tokens_by_default);
        // One thread read serves both a bound caller's reach and counting by
        // the thread's model; otherwise the append itself finds the thread.
        let read = if who.resource().is_some() || (count && options.model.is_none()) {
            Some(self.get_thread(who, thread).await?)
        } else {
            None
        };
        if self.semantic.is_some() {
            // Before anything is stored: a refused batch writes nothing.
            let cost = crate::embedding_cost(batch.iter().map(NewMessage::content));
            self.limiter.charge_embedding(tenant, cost).await?;
        }
        let batch = if count {
            let model = match options.model {
                Some(m) => parse_model(&m)?,
                None => match self.thread_model(tenant, read).await? {
                    Some(m) => m,
                    None => {
                        return Err(memlayer_domain::DomainError::new(
                            "model",
                            "token counting needs a model: set the thread's (or its agent's) model or pass one with the request",
                        )
                        .into());
                    }
                },
            };
            let texts = batch.iter().map(|m| memlayer_domain::model_text(m.content(), m.tool_calls())).collect();
            let counts = self.tokens.count(&model, texts).await;
            if counts.len() != batch.len() {
                return Err(StoreError::backend(format!(
                    "token counter returned {} counts for {} messages",
                    counts.len(),
                    batch.len()
                )));
            }
            batch.into_iter().zip(counts).map(|(m, c)| m.with_token_count(c)).collect()
        } else {
            batch
        };
        let quota = self.limiter.quota(tenant).await;
        let stored = self.messages.append_within(who, thread, batch, &quota).await?;
        if let Some(trigger) = &self.summary_trigger {
            trigger.note(tenant, thread, &stored);
        }
        if let Some(s) = &self.semantic {
            if s.inline {
                // The messages are stored whatever happens here: a failed
                // embedding stays pending and is retried by the worker.
                if let Err(e) = s.worker.drain().await {
                    tracing::warn!(error = %e, "inline embedding failed; the worker will retry");
                }
            } else {
                s.worker.wake();
            }
        }
        Ok(stored)
    }

    /// Appends one message; see [`MemoryService::append_messages`].
    ///
    /// # Errors
    /// As [`MemoryService::append_messages`].
    pub async fn append_message(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        message: NewMessage,
        options: AppendOptions,
    ) -> Result<Message, StoreError> {
        let mut stored = self.append_messages(who, thread, vec![message], options).await?;
        stored.pop().ok_or_else(|| StoreError::backend("append of one message returned none"))
    }

    /// A page of messages from a cursor; see [`MessageStore::page_within`]:
    /// at most `limit` messages and at most the response budget's bytes
    /// (a page cut by the budget has fewer messages and a `next_cursor`).
    /// Without `limit`, the thread's `last_n` memory option (from its
    /// agent), else the default page size (50).
    ///
    /// # Errors
    /// As [`MessageStore::page_within`].
    pub async fn page_messages(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        cursor: Option<Cursor>,
        direction: Option<Direction>,
        limit: impl Into<Option<PageSize>>,
    ) -> Result<Page<Message>, StoreError> {
        let limit = self.limit_or_last_n(who, thread, limit.into()).await?;
        self.messages.page_within(who, thread, cursor, direction, limit, self.max_response_bytes).await
    }

    /// The last `n` messages, oldest first; without `n`, as many as
    /// [`MemoryService::page_messages`] would page by default.
    ///
    /// # Errors
    /// As [`MessageStore::last`].
    pub async fn last_messages(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        n: impl Into<Option<PageSize>>,
    ) -> Result<Vec<Message>, StoreError> {
        let n = self.limit_or_last_n(who, thread, n.into()).await?;
        self.messages.last(who, thread, n).await
    }

    /// One message.
    ///
    /// # Errors
    /// `NotFound` when it does not exist for this tenant.
    pub async fn get_message(&self, who: &(impl Reach + 'static), id: MessageId) -> Result<Message, StoreError> {
        let message = self.messages.get(who, id).await?;
        if self.check_reach(who, message.thread_id).await.is_err() {
            return Err(StoreError::not_found("message", id));
        }
        Ok(message)
    }

    /// An agent's state in a thread.
    ///
    /// # Errors
    /// As [`StateStore::load`].
    pub async fn load_state(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        agent: &AgentName,
    ) -> Result<Option<AgentState>, StoreError> {
        self.check_reach(who, thread).await?;
        self.states.load(who, thread, agent).await
    }

    /// Saves an agent's state if `expected` is the current version.
    ///
    /// # Errors
    /// `Conflict` for a stale version; as [`StateStore::save`] otherwise.
    pub async fn save_state(
        &self,
        who: &(impl Reach + 'static),
        thread: ThreadId,
        agent: &AgentName,
        state: Value,
        expected: StateVersion,
    ) -> Result<AgentState, StoreError> {
        AgentState::validate(&state)?;
        self.check_reach(who, thread).await?;
        self.states.save(who, thread, agent, state, expected).await
    }

    /// Counts tokens of `texts` for `model`.
    ///
    /// # Errors
    /// `Invalid` for an unacceptable model name.
    pub async fn count_tokens(&self, model: &str, texts: Vec<String>) -> Result<Vec<TokenCount>, StoreError> {
        let model = parse_model(model)?;
        Ok(self.tokens.count(&model, texts).await)
    }
}
