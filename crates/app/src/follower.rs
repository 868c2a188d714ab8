//! [`FollowingIndex`]: an in-process vector index (`hnsw`, `exact`) that
//! reads the store's [`DeletionLog`] before every search, so what another
//! process deleted (a `memlayer prune` or `erase-resource` beside a running
//! server, another server on the same database) never takes a top-k slot:
//! this process's own deletions reach the index directly, as before, and
//! every other process's through the log.
//!
//! A search that finds a round of reading in progress waits for it, and
//! reads the log itself only when no round has started since it arrived,
//! so concurrent searches share one read. A reader whose cursor fell
//! behind a purge of the log reconciles the index with the stored vectors
//! instead (it may have missed deletions).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use memlayer_domain::{Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{
    DeletionCursor, DeletionLog, EmbeddingStore, IndexKind, SearchFilter, StoreError, VectorEntry, VectorIndex,
    VectorSearch,
};
use tokio::sync::Mutex;

/// Entries read from the log per page.
const PAGE: u32 = 5_000;

/// Brings an in-process or separate index in line with the durable vectors
/// of `model`: adds what it lacks, removes what the store no longer has.
/// Returns how many it added.
///
/// # Errors
/// A store or index error.
pub(crate) async fn reconcile(
    store: &dyn EmbeddingStore,
    index: &dyn VectorIndex,
    model: &str,
) -> Result<usize, StoreError> {
    let present: HashSet<_> = index.ids().await?.into_iter().collect();
    let mut seen = HashSet::with_capacity(present.len());
    let mut added = 0;
    let mut after = None;
    loop {
        let (entries, next) = store.scan_vectors(model.to_owned(), after, 4_096).await?;
        seen.extend(entries.iter().map(|e| e.id));
        let missing: Vec<_> = entries.into_iter().filter(|e| !present.contains(&e.id)).collect();
        added += missing.len();
        if !missing.is_empty() {
            index.upsert(missing).await?;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let stale: Vec<_> = present.into_iter().filter(|id| !seen.contains(id)).collect();
    if !stale.is_empty() {
        tracing::info!(removed = stale.len(), "vector index: removing entries no longer stored");
        index.remove(stale).await?;
    }
    Ok(added)
}

/// An in-process vector index that follows the store's deletion log.
#[derive(Debug)]
pub(crate) struct FollowingIndex {
    inner: Arc<dyn VectorIndex>,
    log: Arc<dyn DeletionLog>,
    /// For a reconcile when the log was purged past the cursor.
    store: Arc<dyn EmbeddingStore>,
    model: String,
    /// Where this index stands in the log; held during a round.
    cursor: Mutex<DeletionCursor>,
    /// Rounds started (under `cursor`'s lock).
    rounds: AtomicU64,
}

impl FollowingIndex {
    /// Follows `log` from now: take it before the index is reconciled with
    /// the store, so a deletion during the reconcile is read again after.
    ///
    /// # Errors
    /// The log cannot be read.
    pub(crate) async fn new(
        inner: Arc<dyn VectorIndex>,
        log: Arc<dyn DeletionLog>,
        store: Arc<dyn EmbeddingStore>,
        model: String,
    ) -> Result<Self, StoreError> {
        let cursor = log.deletion_cursor().await?;
        Ok(Self { inner, log, store, model, cursor: Mutex::new(cursor), rounds: AtomicU64::new(0) })
    }

    /// Applies what the log holds after the cursor: every deletion committed
    /// before the call is applied when it returns `Ok` (by this round, or
    /// by one that started after the call).
    ///
    /// # Errors
    /// The log or the index failed; the cursor stays where it was.
    pub(crate) async fn follow(&self) -> Result<(), StoreError> {
        let arrived = self.rounds.load(Ordering::SeqCst);
        let mut cursor = self.cursor.lock().await;
        if self.rounds.load(Ordering::SeqCst) > arrived {
            // A round that started after this call has finished.
            return Ok(());
        }
        self.rounds.fetch_add(1, Ordering::SeqCst);
        let mut at = cursor.clone();
        loop {
            let page = self.log.deletions_since(&at, PAGE).await?;
            if page.lost {
                tracing::warn!(
                    "the deletion log was purged past what the vector index applied: reconciling it with the store"
                );
                let fresh = self.log.deletion_cursor().await?;
                reconcile(self.store.as_ref(), self.inner.as_ref(), &self.model).await?;
                *cursor = fresh;
                return Ok(());
            }
            let mut messages = Vec::new();
            for d in &page.items {
                match d.message {
                    Some(id) => messages.push(id),
                    None => self.inner.remove_thread(&d.tenant, d.thread).await?,
                }
            }
            if !messages.is_empty() {
                self.inner.remove(messages).await?;
            }
            at = page.next;
            *cursor = at.clone();
            if !page.more {
                return Ok(());
            }
        }
    }

    /// [`FollowingIndex::follow`] before a search: a failure is logged and
    /// the search goes on (its hits are read back from the store, so a
    /// deleted entry is never returned; it may only take a slot).
    async fn follow_for_search(&self) {
        if let Err(e) = self.follow().await {
            tracing::warn!(error = %e, "reading the deletion log before a search failed");
        }
    }
}

#[async_trait]
impl VectorIndex for FollowingIndex {
    fn kind(&self) -> IndexKind {
        self.inner.kind()
    }

    async fn upsert(&self, entries: Vec<VectorEntry>) -> Result<(), StoreError> {
        self.inner.upsert(entries).await
    }

    async fn remove(&self, ids: Vec<MessageId>) -> Result<(), StoreError> {
        self.inner.remove(ids).await
    }

    async fn remove_thread(&self, tenant: &TenantId, thread: ThreadId) -> Result<(), StoreError> {
        self.inner.remove_thread(tenant, thread).await
    }

    async fn search(&self, filter: &SearchFilter, query: &Embedding, k: usize) -> Result<VectorSearch, StoreError> {
        self.follow_for_search().await;
        self.inner.search(filter, query, k).await
    }

    async fn search_excluding(
        &self,
        filter: &SearchFilter,
        query: &Embedding,
        k: usize,
        exclude: &HashSet<MessageId>,
    ) -> Result<VectorSearch, StoreError> {
        self.follow_for_search().await;
        self.inner.search_excluding(filter, query, k, exclude).await
    }

    async fn settle(&self) -> Result<(), StoreError> {
        self.inner.settle().await
    }

    async fn len(&self) -> Result<usize, StoreError> {
        self.inner.len().await
    }

    async fn ids(&self) -> Result<Vec<MessageId>, StoreError> {
        self.inner.ids().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_adapters_embed::ExactIndex;
    use memlayer_ports::{Deletion, Deletions, MockDeletionLog, MockEmbeddingStore};

    use super::*;

    fn entry(tenant: &TenantId, thread: ThreadId, x: f32) -> VectorEntry {
        let embedding = Embedding::new("m".to_owned(), vec![x, 1.0 - x], 2).unwrap();
        VectorEntry { id: MessageId::new(), tenant: tenant.clone(), thread, embedding }
    }

    async fn ids(index: &FollowingIndex) -> Vec<MessageId> {
        let mut ids = index.ids().await.unwrap();
        ids.sort();
        ids
    }

    fn sorted(mut v: Vec<MessageId>) -> Vec<MessageId> {
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_search_first_applies_what_the_log_holds_in_pages() {
        let t = TenantId::parse("acme").unwrap();
        let (a, b) = (ThreadId::new(), ThreadId::new());
        let entries = [entry(&t, a, 0.1), entry(&t, a, 0.2), entry(&t, b, 0.3), entry(&t, b, 0.4)];
        let mut log = MockDeletionLog::new();
        log.expect_deletion_cursor().returning(|| Ok(DeletionCursor { seq: 7, pending: Vec::new() }));
        let (gone, thread_b) = (entries[0].id, b);
        let tenant = t.clone();
        log.expect_deletions_since().returning(move |cursor, _| {
            Ok(match cursor.seq {
                // Two pages, then nothing new.
                7 => Deletions {
                    items: vec![Deletion { tenant: tenant.clone(), thread: a, message: Some(gone) }],
                    next: DeletionCursor { seq: 8, pending: vec![3] },
                    more: true,
                    lost: false,
                },
                8 => Deletions {
                    items: vec![Deletion { tenant: tenant.clone(), thread: thread_b, message: None }],
                    next: DeletionCursor { seq: 9, pending: Vec::new() },
                    more: false,
                    lost: false,
                },
                _ => Deletions { next: cursor.clone(), ..Deletions::default() },
            })
        });
        let index = FollowingIndex::new(
            Arc::new(ExactIndex::new()),
            Arc::new(log),
            Arc::new(MockEmbeddingStore::new()),
            "m".into(),
        )
        .await
        .unwrap();
        index.upsert(entries.to_vec()).await.unwrap();
        let query = Embedding::new("m".to_owned(), vec![0.1, 0.9], 2).unwrap();
        let found = index.search(&SearchFilter::all_threads(t.clone()), &query, 4).await.unwrap();
        assert_eq!(found.matches.iter().map(|m| m.id).collect::<Vec<_>>(), vec![entries[1].id], "one left");
        assert_eq!(ids(&index).await, vec![entries[1].id]);
        assert_eq!(*index.cursor.lock().await, DeletionCursor { seq: 9, pending: Vec::new() });
    }

    #[tokio::test]
    async fn a_cursor_behind_a_purge_reconciles_with_the_store() {
        let t = TenantId::parse("acme").unwrap();
        let a = ThreadId::new();
        let entries = [entry(&t, a, 0.1), entry(&t, a, 0.2), entry(&t, a, 0.3)];
        let mut log = MockDeletionLog::new();
        let mut cursors = vec![DeletionCursor { seq: 40, pending: Vec::new() }, DeletionCursor::default()];
        log.expect_deletion_cursor().returning(move || Ok(cursors.pop().unwrap()));
        log.expect_deletions_since().returning(|cursor, _| {
            Ok(Deletions { lost: cursor.seq == 0, next: cursor.clone(), ..Deletions::default() })
        });
        // The store holds the last two vectors and one the index lacks.
        let extra = entry(&t, a, 0.5);
        let stored = vec![entries[1].clone(), entries[2].clone(), extra.clone()];
        let mut store = MockEmbeddingStore::new();
        store.expect_scan_vectors().returning(move |_, _, _| Ok((stored.clone(), None)));
        let index =
            FollowingIndex::new(Arc::new(ExactIndex::new()), Arc::new(log), Arc::new(store), "m".into()).await.unwrap();
        index.upsert(entries.to_vec()).await.unwrap();
        index.follow().await.unwrap();
        assert_eq!(ids(&index).await, sorted(vec![entries[1].id, entries[2].id, extra.id]));
        assert_eq!(index.cursor.lock().await.seq, 40, "read on from a cursor taken at the reconcile");
    }
}
