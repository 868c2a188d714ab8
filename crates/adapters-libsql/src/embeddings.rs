//! [`memlayer_ports::EmbeddingStore`] on libSQL (its shared rules in
//! `memlayer_adapters_sql::embeddings`): the embedding job queue, stored vectors and
//! full-text (FTS5/BM25) search, one FTS5 table per tenant. The tables and
//! the triggers that keep them in step with `messages` are migrations 2, 3
//! and 5.
//!
//! Appends write only their messages (migration 3): full-text entries and
//! embedding jobs of messages above the `semantic_watermark` are added in
//! batches by [`LibsqlBackend::catch_up`]. The queue's writers (claiming,
//! failing, re-enqueueing jobs) run it first; readers (due jobs, full-text
//! search, progress counts) never take the writer for it: they wake the
//! backend's indexer task and wait for its round, bounded, and the counts
//! include the messages above the watermark as pending, so no stored
//! message is ever silently missing.

use std::sync::Arc;

use async_trait::async_trait;
use libsql::{Connection, Value};
use memlayer_adapters_sql::Cells;
use memlayer_adapters_sql::embeddings::{self, Due, EmbeddingEngine};
use memlayer_domain::{
    COVERAGE_COUNT_LIMIT, Coverage, Embedding, EmbeddingCounts, MessageId, TenantId, ThreadId, Timestamp, now,
    to_micros,
};
use memlayer_ports::{
    LexicalDelta, LexicalEntry, LexicalIndex, PendingEmbedding, ScoredHit, SearchFilter, StoreError, VectorEntry,
};

use crate::LibsqlBackend;
use crate::error::{Context as _, corrupt};
use crate::exec;
use crate::filter_sql::{FilterSql, filter_sql};
use crate::rows::{cells, query_row};
use crate::values::{text, uuid};
use crate::vectors::{decode_f32, encode_f32};

memlayer_adapters_sql::embedding_store!(LibsqlBackend);

#[async_trait]
impl EmbeddingEngine for LibsqlBackend {
    async fn due_jobs(&self, due: Due) -> Result<Vec<PendingEmbedding>, StoreError> {
        self.await_indexed().await?;
        let (now, limit) = (to_micros(due.now), due.limit.get());
        self.read(move |conn| async move {
            let jobs = read_due_jobs(&conn, now, limit).await?;
            Ok(jobs.into_iter().map(|(_, job)| job).collect())
        })
        .await
    }

    async fn claim_jobs(&self, due: Due, lease_until: Timestamp) -> Result<Vec<PendingEmbedding>, StoreError> {
        self.catch_up().await?;
        if self.first_claim() {
            // A lease outlives the process that took it. A libSQL file has
            // one server (and at times a `memlayer reembed`), so leases found
            // at a process's first claim belong to one that died or is
            // about to finish: take them back rather than leave the jobs
            // waiting out the lease. At worst a live process's batch is
            // embedded twice, and the second vector replaces the first.
            self.write(|conn| async move {
                conn.execute("UPDATE embedding_jobs SET leased_until = 0 WHERE leased_until > 0", ())
                    .await
                    .ctx("take back stale embedding leases")?;
                Ok(())
            })
            .await?;
        }
        let (now, limit, until) = (to_micros(due.now), due.limit.get(), to_micros(lease_until));
        let due = self
            .read(move |conn| async move {
                let found = query_row(&conn, "read embedding jobs", ANY_DUE, [now], |_| Ok(())).await?;
                Ok(found.is_some())
            })
            .await?;
        if !due {
            // The idle worker's poll: a read, never the writer.
            return Ok(Vec::new());
        }
        // Read and lease in one write transaction: another process on the
        // same file claiming at once waits for the writer lock and then sees
        // the leases.
        self.write(move |conn| async move {
            let jobs = read_due_jobs(&conn, now, limit).await?;
            let lease = conn
                .prepare("UPDATE embedding_jobs SET leased_until = ?2 WHERE message_rowid = ?1")
                .await
                .ctx("lease embedding jobs")?;
            for (rowid, _) in &jobs {
                let result = lease.execute([*rowid, until]).await;
                lease.reset();
                result.ctx("lease embedding jobs")?;
            }
            Ok(jobs.into_iter().map(|(_, job)| job).collect())
        })
        .await
    }

    async fn complete_jobs(&self, done: Vec<(MessageId, Embedding)>) -> Result<Vec<VectorEntry>, StoreError> {
        let at = to_micros(now());
        self.write(move |conn| async move {
            let lookup = conn.prepare(MESSAGE_SCOPE).await.ctx("complete embedding jobs")?;
            let store = conn
                .prepare(
                    "INSERT OR REPLACE INTO message_vectors (message_rowid, model, dim, vector, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .await
                .ctx("complete embedding jobs")?;
            let finish = conn
                .prepare("DELETE FROM embedding_jobs WHERE message_rowid = ?1")
                .await
                .ctx("complete embedding jobs")?;
            let mut stored = Vec::with_capacity(done.len());
            for (id, embedding) in done {
                let found = {
                    let mut rows = lookup.query(vec![uuid(id.as_uuid())]).await.ctx("complete embedding jobs")?;
                    let found = match rows.next().await.ctx("complete embedding jobs")? {
                        Some(row) => {
                            let r = cells(&row, "messages");
                            Some((
                                r.int(0, "rowid")?,
                                ThreadId::from_uuid(r.uuid(1, "thread_id")?),
                                r.parse(2, "tenant", TenantId::parse)?,
                            ))
                        }
                        None => None,
                    };
                    drop(rows);
                    lookup.reset();
                    found
                };
                // Deleted meanwhile: its job went with it; store nothing.
                let Some((rowid, thread, tenant)) = found else { continue };
                let params = vec![
                    Value::Integer(rowid),
                    text(embedding.model()),
                    int(embedding.dim()),
                    Value::Blob(encode_f32(embedding.vector())),
                    Value::Integer(at),
                ];
                let result = store.execute(params).await;
                store.reset();
                result.ctx("store vector")?;
                let result = finish.execute(vec![Value::Integer(rowid)]).await;
                finish.reset();
                result.ctx("delete embedding job")?;
                stored.push(VectorEntry { id, tenant, thread, embedding });
            }
            Ok(stored)
        })
        .await
    }

    async fn fail_jobs(&self, ids: Vec<MessageId>, error: String, retry_at: Timestamp) -> Result<(), StoreError> {
        // A job not yet materialised must exist to record its failure.
        self.catch_up().await?;
        let retry_at = to_micros(retry_at);
        self.write(move |conn| async move {
            let stmt = conn
                .prepare(
                    "UPDATE embedding_jobs SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3, \
                     leased_until = 0 WHERE message_rowid = (SELECT rowid FROM messages WHERE id = ?1)",
                )
                .await
                .ctx("record failed embedding jobs")?;
            for id in ids {
                let result =
                    stmt.execute(vec![uuid(id.as_uuid()), text(error.as_str()), Value::Integer(retry_at)]).await;
                stmt.reset();
                result.ctx("record failed embedding jobs")?;
            }
            Ok(())
        })
        .await
    }

    async fn enqueue_missing(&self, model: String) -> Result<u64, StoreError> {
        self.catch_up().await?;
        let at = to_micros(now());
        self.write(move |conn| async move {
            let added = conn
                .execute(
                    "INSERT INTO embedding_jobs \
                     (message_rowid, attempts, next_attempt_at, last_error, created_at, tenant) \
                     SELECT m.rowid, 0, ?2, NULL, ?2, t.tenant FROM messages m JOIN threads t ON t.id = m.thread_id \
                     WHERE t.deleted_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid AND v.model = ?1) \
                     AND NOT EXISTS (SELECT 1 FROM embedding_jobs j WHERE j.message_rowid = m.rowid)",
                    vec![Value::Text(model), Value::Integer(at)],
                )
                .await
                .ctx("enqueue missing embeddings")?;
            conn.execute(
                "UPDATE embedding_jobs SET next_attempt_at = ?1 WHERE next_attempt_at > ?1",
                vec![Value::Integer(at)],
            )
            .await
            .ctx("make embedding jobs due")?;
            Ok(added)
        })
        .await
    }

    async fn scan_rows(&self, model: String, after: i64, fetch: usize) -> Result<Vec<(i64, VectorEntry)>, StoreError> {
        self.read(move |conn| async move {
            let params = vec![Value::Text(model.clone()), Value::Integer(after), int(fetch)];
            let mut rows = conn.query(SCAN_VECTORS, params).await.ctx("scan vectors")?;
            let mut entries = Vec::with_capacity(fetch.min(4096));
            while let Some(row) = rows.next().await.ctx("scan vectors")? {
                let r = cells(&row, "message_vectors");
                let position = r.int(0, "rowid")?;
                let dim = usize::try_from(r.int(4, "dim")?).map_err(|e| corrupt("message_vectors", "dim", e))?;
                let vector = decode_f32(&r.blob(5, "vector")?)
                    .ok_or_else(|| corrupt("message_vectors", "vector", "length is not a multiple of 4"))?;
                let embedding =
                    Embedding::new(model.clone(), vector, dim).map_err(|e| corrupt("message_vectors", "vector", e))?;
                entries.push((
                    position,
                    VectorEntry {
                        id: MessageId::from_uuid(r.uuid(1, "id")?),
                        thread: ThreadId::from_uuid(r.uuid(2, "thread_id")?),
                        tenant: r.parse(3, "tenant", TenantId::parse)?,
                        embedding,
                    },
                ));
            }
            Ok(entries)
        })
        .await
    }

    async fn embedding_counts(&self, filter: &SearchFilter, model: String) -> Result<EmbeddingCounts, StoreError> {
        let Some(cond) = filter_sql(filter, "t.tenant", "m.thread_id", 2) else {
            return Ok(EmbeddingCounts::default());
        };
        self.await_indexed().await?;
        let from = "FROM messages m JOIN threads t ON t.id = m.thread_id";
        let sql = format!(
            "SELECT \
             (SELECT count(*) {from} JOIN message_vectors v ON v.message_rowid = m.rowid AND v.model = ?1 \
              WHERE 1 {s}), \
             (SELECT count(*) {from} JOIN embedding_jobs j ON j.message_rowid = m.rowid WHERE 1 {s}) + {UNQUEUED}, \
             (SELECT count(*) {from} JOIN embedding_jobs j ON j.message_rowid = m.rowid WHERE j.attempts > 0 {s}), \
             (SELECT count(*) {from} WHERE 1 {s} \
              AND EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid AND v.model <> ?1) \
              AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid AND v.model = ?1))",
            s = cond.sql,
            UNQUEUED = unqueued(&cond.sql),
        );
        let mut params = vec![Value::Text(model)];
        params.extend(cond.params);
        self.read(move |conn| async move {
            query_row(&conn, "count embeddings", &sql, params, |row| embeddings::counts(&exec::values(row)?))
                .await
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn coverage(&self, filter: &SearchFilter, model: String) -> Result<Coverage, StoreError> {
        let Some(cond) = filter_sql(filter, "t.tenant", "m.thread_id", 2) else {
            return Ok(Coverage::default());
        };
        // No wait for the catch-up: messages it has not reached are counted
        // as pending all the same (`unqueued`).
        let sql = coverage_sql(&cond.sql);
        let mut params = vec![Value::Text(model)];
        params.extend(cond.params);
        self.read(move |conn| async move {
            query_row(&conn, "count coverage", &sql, params, |row| embeddings::coverage(&exec::values(row)?))
                .await
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn match_text(&self, filter: &SearchFilter, matcher: String, k: usize) -> Result<Vec<ScoredHit>, StoreError> {
        let Some(cond) = filter_sql(filter, "t.tenant", "m.thread_id", 3) else {
            return Ok(Vec::new());
        };
        if let Some(index) = self.lexical() {
            let matching = self.match_in_index(index.clone(), filter, &matcher, k);
            return tracing::Instrument::instrument(matching, tracing::info_span!("lexical.match")).await;
        }
        tracing::Instrument::instrument(self.await_indexed(), tracing::info_span!("lexical.catch_up")).await?;
        let tenant = filter.tenant.as_str().to_owned();
        self.read(move |conn| async move {
            let Some(id) = query_row(
                &conn,
                "full-text search",
                "SELECT id FROM lexical_tenants WHERE tenant = ?1",
                [tenant],
                |row| cells(row, "lexical_tenants").int(0, "id"),
            )
            .await?
            else {
                return Ok(Vec::new());
            };
            // The tenant's own table, so BM25's statistics are its own.
            // `bm25()` is lower-better (negative); the port wants
            // higher-better. Entries queued as stale (deleted or edited
            // since the catch-up) are left out.
            let sql = format!(
                "SELECT m.id, m.thread_id, -bm25({table}) AS score FROM {table} \
                 JOIN messages m ON m.rowid = {table}.rowid JOIN threads t ON t.id = m.thread_id \
                 WHERE {table} MATCH ?1 {filter} AND {table}.rowid NOT IN (SELECT message_rowid FROM lexical_stale) \
                 ORDER BY bm25({table}) LIMIT ?2",
                table = lexical_table(id),
                filter = cond.sql
            );
            let mut params = vec![Value::Text(matcher), int(k)];
            params.extend(cond.params);
            let mut rows = conn.query(&sql, params).await.ctx("full-text search")?;
            let mut hits = Vec::with_capacity(k.min(256));
            while let Some(row) = rows.next().await.ctx("full-text search")? {
                hits.push(embeddings::scored_hit(&exec::values(&row)?, "lexical_fts")?);
            }
            Ok(hits)
        })
        .await
    }
}

impl LibsqlBackend {
    /// A lexical search in the in-process index, without waiting for the
    /// catch-up to feed it: what the store knows the index may still hold
    /// although it is gone (stale entries, deletions not yet applied,
    /// threads marked deleted) is left out, and the filter's messages the
    /// index may not hold as they are now (above its position, or live at
    /// a position left out) are read from the store and ranked with it
    /// ([`LexicalDelta`]). Only when more than [`MAX_UNINDEXED`] entries
    /// or [`MAX_UNINDEXED_BYTES`] wait (a bulk import the index has not
    /// reached) does the search wait for a round (bounded) and read again;
    /// if still more wait, it ranks the oldest that fit with the index.
    async fn match_in_index(
        &self,
        index: Arc<dyn LexicalIndex>,
        filter: &SearchFilter,
        matcher: &str,
        k: usize,
    ) -> Result<Vec<ScoredHit>, StoreError> {
        let Some(cond) = filter_sql(filter, "t.tenant", "+m.thread_id", 6) else {
            return Ok(Vec::new());
        };
        let (mut delta, more) = self.lexical_delta(&index, filter, &cond).await?;
        if more {
            tracing::Instrument::instrument(self.await_indexed(), tracing::info_span!("lexical.catch_up")).await?;
            delta = self.lexical_delta(&index, filter, &cond).await?.0;
        }
        if !delta.pending.is_empty() {
            // Keeps the tail short when no search waits and no embedding
            // worker runs the catch-up.
            self.indexer().wake();
        }
        index.search(filter, fts_terms(matcher), k, delta).await
    }

    /// What the in-process index does not reflect yet for `filter` (with
    /// `cond`, its condition numbered from 6), read in one statement, so
    /// one snapshot: the positions and threads to leave out, and the oldest
    /// pending entries within [`MAX_UNINDEXED`], [`MAX_UNINDEXED_BYTES`] and
    /// [`UNINDEXED_WINDOW`]; whether more were pending (or may be).
    async fn lexical_delta(
        &self,
        index: &Arc<dyn LexicalIndex>,
        filter: &SearchFilter,
        cond: &FilterSql,
    ) -> Result<(LexicalDelta, bool), StoreError> {
        // Read before the store: an entry the feed adds meanwhile is then
        // pending and indexed both, and the index counts it once.
        let position = index.position();
        let applied = self.lexical_deletions().unwrap_or(0);
        let window = position.saturating_add(UNINDEXED_WINDOW);
        let sql = delta_sql(&cond.sql);
        let mut params = vec![
            Value::Text(filter.tenant.as_str().to_owned()),
            Value::Integer(applied),
            Value::Integer(position),
            int(MAX_UNINDEXED + 1),
            Value::Integer(window),
        ];
        params.extend(cond.params.iter().cloned());
        self.read(move |conn| async move {
            let mut delta = LexicalDelta::default();
            let (mut bytes, mut more) = (0usize, false);
            let mut rows = conn.query(&sql, params).await.ctx("read full-text delta")?;
            while let Some(row) = rows.next().await.ctx("read full-text delta")? {
                let r = cells(&row, "messages");
                match r.int(6, "kind")? {
                    0 => delta.positions.push(r.int(0, "message_rowid")?),
                    1 => delta.threads.push(ThreadId::from_uuid(r.uuid(2, "thread_id")?)),
                    // Messages above the window were not read.
                    3 => more |= r.int(0, "rowid")? > window,
                    _ => {
                        let entry = lexical_entry(&row)?;
                        bytes = bytes.saturating_add(entry.text.len());
                        // The pending entries come last (kind 2), in rowid
                        // order: stopping here keeps the oldest.
                        if delta.pending.len() >= MAX_UNINDEXED || bytes > MAX_UNINDEXED_BYTES {
                            more = true;
                            break;
                        }
                        delta.pending.push(entry);
                    }
                }
            }
            Ok((delta, more))
        })
        .await
    }

    /// Applies the deletion log (migration 22) to the in-process index from
    /// the entry it last applied, in pages: removes each deleted message's
    /// entry by position and adds back the entry of any message that holds
    /// that position now (SQLite hands the newest rowids out again), so
    /// applying an entry late or twice is harmless. Thread entries are
    /// skipped: searches leave threads marked deleted out until the sweep
    /// deletes their messages, which are logged one by one.
    ///
    /// The first round starts after the newest entry when the index is new
    /// (the feed reads the store after it), and replays what the log holds
    /// when the index came from a snapshot (deletions since it was written;
    /// the log keeps a day, `memlayer_app`'s purge). When the log was purged
    /// past the entry the index had applied, the index may hold deleted
    /// entries: it is cleared and fed again from the start. Runs under the
    /// feeding lock.
    async fn follow_deletions(&self, index: &Arc<dyn LexicalIndex>) -> Result<(), StoreError> {
        let (mut from, check_loss) = match self.lexical_deletions() {
            Some(seq) => (seq, true),
            None if index.position() == 0 => {
                let newest = self.read(|conn| async move { crate::deletions::newest(&conn).await }).await?;
                self.set_lexical_deletions(newest);
                return Ok(());
            }
            None => (0, false),
        };
        loop {
            let page = self
                .read(move |conn| async move {
                    if check_loss && crate::deletions::horizon(&conn).await? > from {
                        return Ok(None);
                    }
                    let mut removals = Vec::new();
                    let mut last = from;
                    let mut read = 0;
                    {
                        let mut rows = conn
                            .query(
                                "SELECT seq, message_rowid, tenant FROM deletion_log WHERE seq > ?1 \
                                 ORDER BY seq LIMIT ?2",
                                [from, CATCH_UP_CHUNK],
                            )
                            .await
                            .ctx("read deletion log")?;
                        while let Some(row) = rows.next().await.ctx("read deletion log")? {
                            let r = cells(&row, "deletion_log");
                            (last, read) = (r.int(0, "seq")?, read + 1);
                            if let Some(rowid) = r.opt_int(1, "message_rowid")? {
                                removals.push((r.parse(2, "tenant", TenantId::parse)?, rowid));
                            }
                        }
                    }
                    let mut live = Vec::new();
                    if !removals.is_empty() {
                        let mut rows = conn
                            .query(
                                &format!(
                                    "{LEXICAL_ENTRIES} WHERE f.message_rowid IN (SELECT message_rowid FROM \
                                     deletion_log WHERE seq > ?1 AND seq <= ?2 AND message_rowid IS NOT NULL)"
                                ),
                                [from, last],
                            )
                            .await
                            .ctx("read messages at deleted positions")?;
                        while let Some(row) = rows.next().await.ctx("read messages at deleted positions")? {
                            live.push(lexical_entry(&row)?);
                        }
                    }
                    Ok(Some((removals, live, last, read >= CATCH_UP_CHUNK)))
                })
                .await?;
            let Some((removals, live, last, more)) = page else {
                tracing::warn!(
                    applied = from,
                    "the deletion log was purged past what the full-text index applied: rebuilding it from the store"
                );
                let newest = self.read(|conn| async move { crate::deletions::newest(&conn).await }).await?;
                index.clear().await?;
                self.set_lexical_deletions(newest);
                return Ok(());
            };
            if !removals.is_empty() || !live.is_empty() {
                index.apply(removals, live, None).await?;
            }
            self.set_lexical_deletions(last);
            from = last;
            if !more {
                return Ok(());
            }
        }
    }

    /// Feeds the in-process index the messages from its position (or from
    /// `watermark`, where the store's watermark was before this round, when
    /// lower: the rowids above it may have been handed out again) up to the
    /// store's watermark now, in chunks, each applied with the position it
    /// reaches. Runs under the feeding lock, after the round's stale
    /// entries were applied.
    async fn feed_lexical(&self, index: &Arc<dyn LexicalIndex>, watermark: i64) -> Result<(), StoreError> {
        let mut from = index.position().min(watermark);
        let target = self
            .read(|conn| async move {
                query_row(&conn, "read watermark", "SELECT caught_up_to FROM semantic_watermark", (), |row| {
                    cells(row, "semantic_watermark").int(0, "caught_up_to")
                })
                .await
            })
            .await?
            .unwrap_or(0);
        if from >= target {
            if index.position() != target {
                index.apply(Vec::new(), Vec::new(), Some(target)).await?;
            }
            return Ok(());
        }
        while from < target {
            let to = target.min(from.saturating_add(CATCH_UP_CHUNK));
            let entries = self
                .read(move |conn| async move {
                    let mut rows = conn
                        .query(
                            &format!("{LEXICAL_ENTRIES} WHERE f.message_rowid > ?1 AND f.message_rowid <= ?2"),
                            [from, to],
                        )
                        .await
                        .ctx("read messages to index")?;
                    let mut entries = Vec::new();
                    while let Some(row) = rows.next().await.ctx("read messages to index")? {
                        entries.push(lexical_entry(&row)?);
                    }
                    Ok(entries)
                })
                .await?;
            index.apply(Vec::new(), entries, Some(to)).await?;
            from = to;
        }
        Ok(())
    }
}

/// The words of an FTS5 query made by `Dialect::text_query` (quoted words
/// joined by `OR`). Its words are runs of letters and digits
/// (`memlayer_domain::query_terms`), so they hold neither quotes nor spaces.
fn fts_terms(matcher: &str) -> Vec<String> {
    matcher.split(" OR ").map(|w| w.trim_matches('"').to_owned()).filter(|w| !w.is_empty()).collect()
}

/// A message's full-text entry, with what the in-process index needs
/// (continued by a `WHERE` on `f.message_rowid`).
const LEXICAL_ENTRIES: &str = "SELECT f.message_rowid, m.id, m.thread_id, t.tenant, f.content, f.tools \
     FROM messages_fts_source f CROSS JOIN messages m ON m.rowid = f.message_rowid \
     CROSS JOIN threads t ON t.id = m.thread_id";

fn lexical_entry(row: &libsql::Row) -> Result<LexicalEntry, StoreError> {
    let r = cells(row, "messages");
    let tenant = r.text(3, "tenant")?;
    let content = r.opt_text(4, "content")?.unwrap_or_default();
    let tools = r.opt_text(5, "tools")?.unwrap_or_default();
    Ok(LexicalEntry {
        position: r.int(0, "rowid")?,
        id: MessageId::from_uuid(r.uuid(1, "id")?),
        tenant: TenantId::parse(tenant).map_err(|e| corrupt("threads", "tenant", e.to_string()))?,
        thread: ThreadId::from_uuid(r.uuid(2, "thread_id")?),
        text: if tools.is_empty() { content } else { format!("{content} {tools}") },
    })
}

/// What a search of the in-process index must correct
/// (`LibsqlBackend::lexical_delta`), completed by [`delta_sql`]. Parameters:
/// `?1` tenant, `?2` the newest deletion-log entry the in-process index
/// applied, `?3` its position, `?4` a limit, `?5` the window's last rowid.
/// Rows of [`LEXICAL_ENTRIES`]' columns, then a kind:
/// - kind 0, by rowid: the tenant's stale full-text entries and the
///   positions of its messages deleted since;
/// - kind 1: its threads marked deleted (the thread column);
/// - kind 3: the newest rowid of all;
/// - kind 2, last: the filter's live messages above the position (up to
///   the window's last rowid, so a search after a bulk import never reads
///   every rowid above the index's position) or at a kind-0 position
///   (edited, or a rowid handed out again), in rowid order, as full-text
///   entries. Driven by rowid (the range, or the few positions), never by
///   the thread's messages (`+m.thread_id` in the condition).
const DELTA: &str = "SELECT s.message_rowid, NULL, NULL, NULL, NULL, NULL, 0 AS kind FROM lexical_stale s \
     JOIN lexical_tenants l ON l.id = s.tenant_id WHERE l.tenant = ?1 \
     UNION ALL SELECT d.message_rowid, NULL, NULL, NULL, NULL, NULL, 0 FROM deletion_log d \
     WHERE d.seq > ?2 AND d.tenant = ?1 AND d.message_rowid IS NOT NULL \
     UNION ALL SELECT 0, NULL, t.id, NULL, NULL, NULL, 1 FROM threads t WHERE t.deleted_at IS NOT NULL AND t.tenant = ?1 \
     UNION ALL SELECT (SELECT coalesce(max(rowid), 0) FROM messages), NULL, NULL, NULL, NULL, NULL, 3";

/// The positions kind 2 of [`DELTA`] reads.
const PENDING_POSITIONS: &str = "f.message_rowid IN (SELECT rowid FROM messages WHERE rowid > ?3 AND rowid <= ?5 \
     UNION ALL SELECT s.message_rowid FROM lexical_stale s \
         JOIN lexical_tenants l ON l.id = s.tenant_id WHERE l.tenant = ?1 \
     UNION ALL SELECT d.message_rowid FROM deletion_log d WHERE d.seq > ?2 AND d.tenant = ?1)";

/// [`DELTA`] for a filter condition from [`filter_sql`] numbered from 6.
pub(crate) fn delta_sql(cond: &str) -> String {
    format!(
        "{DELTA} UNION ALL SELECT *, 2 FROM ({LEXICAL_ENTRIES} WHERE {PENDING_POSITIONS} {cond} \
         ORDER BY f.message_rowid LIMIT ?4)"
    )
}

/// Entries a search of the in-process index ranks from the store beside
/// the index's, without waiting for the feed: at most this many (a few
/// milliseconds of reading and tokenising) and this many bytes of text; a
/// search that finds more waiting (a bulk import) waits for a catch-up
/// round first.
const MAX_UNINDEXED: usize = 1_000;
/// See [`MAX_UNINDEXED`].
const MAX_UNINDEXED_BYTES: usize = 4 << 20;
/// Rowids (of every tenant) above the index's position that a search looks
/// through for its pending entries; past it, it waits for a round.
const UNINDEXED_WINDOW: i64 = 20_000;

/// The filter's messages above the watermark without a vector: not yet
/// queued by the catch-up, and pending all the same (migration 3). A range
/// of rowids, empty when the catch-up has kept up.
/// `coverage`'s statement for a filter condition from [`filter_sql`]
/// numbered from 2 (`?1` is the model, `?2` the tenant).
///
/// Pending: driven by the tenant's part of the job queue (CROSS JOIN fixes
/// the join order; `j.tenant` is a range of migration 7's
/// `embedding_jobs_tenant_due`, '' the group of jobs queued without a
/// tenant), which is small once the worker keeps up, instead of by the
/// filter's messages, and never by another tenant's backlog (a bulk import
/// elsewhere). Other model: counted only when a vector of another model
/// exists at all (two seeks on the model index), which is never the case
/// in a store that has not changed models. Each count stops at
/// [`COVERAGE_COUNT_LIMIT`] rows (`LIMIT` inside the count), so a search's
/// cost stays bounded behind any backlog.
pub(crate) fn coverage_sql(s: &str) -> String {
    format!(
        "SELECT \
         min((SELECT count(*) FROM (SELECT 1 FROM embedding_jobs j CROSS JOIN messages m ON m.rowid = j.message_rowid \
              CROSS JOIN threads t ON t.id = m.thread_id WHERE j.tenant IN (?2, '') {s} LIMIT {LIMIT})) \
             + (SELECT count(*) FROM ({UNQUEUED} LIMIT {LIMIT})), {LIMIT}), \
         CASE WHEN EXISTS (SELECT 1 FROM message_vectors WHERE model < ?1) \
                OR EXISTS (SELECT 1 FROM message_vectors WHERE model > ?1) \
         THEN (SELECT count(*) FROM (SELECT 1 FROM messages m JOIN threads t ON t.id = m.thread_id WHERE 1 {s} \
               AND EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid AND v.model <> ?1) \
               AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid AND v.model = ?1) \
               LIMIT {LIMIT})) \
         ELSE 0 END",
        UNQUEUED = unqueued_rows(s),
        LIMIT = COVERAGE_COUNT_LIMIT,
    )
}

/// Messages above the catch-up's watermark without a vector (no job yet).
fn unqueued(filter: &str) -> String {
    format!("(SELECT count(*) FROM ({}))", unqueued_rows(filter))
}

/// The rows [`unqueued`] counts.
fn unqueued_rows(filter: &str) -> String {
    format!(
        "SELECT 1 FROM messages m CROSS JOIN threads t ON t.id = m.thread_id \
         WHERE m.rowid > (SELECT caught_up_to FROM semantic_watermark) {filter} \
         AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid)"
    )
}

/// Messages indexed and queued (or stale full-text entries removed) per
/// catch-up transaction: large enough that FTS5 writes few segments, small
/// enough that the writer is never held for long (a few hundred
/// milliseconds).
const CATCH_UP_CHUNK: i64 = 5_000;

impl LibsqlBackend {
    /// Whether messages above the watermark or stale entries wait for the
    /// catch-up (a read).
    async fn index_behind(&self) -> Result<bool, StoreError> {
        Ok(self.index_state().await?.0)
    }

    /// Whether the catch-up has anything to do (the in-process index's feed
    /// included), and the watermark.
    async fn index_state(&self) -> Result<(bool, i64), StoreError> {
        let state = self
            .read(|conn| async move {
                query_row(&conn, "read watermark", BEHIND, (), |row| {
                    let r = cells(row, "semantic_watermark");
                    Ok((r.int(0, "behind")? != 0, r.int(1, "caught_up_to")?, r.int(2, "deleted")?))
                })
                .await
            })
            .await?;
        let (behind, watermark, deleted) = state.unwrap_or((false, 0, 0));
        // The in-process index is fed up to the watermark and has applied
        // the deletion log up to its newest entry.
        let fed = self.lexical().is_none_or(|index| {
            index.position() == watermark && self.lexical_deletions().is_some_and(|applied| applied >= deleted)
        });
        Ok((behind || !fed, watermark))
    }

    /// Waits until everything stored before the call is indexed and queued
    /// (and stale entries removed or re-indexed),
    /// at most the configured index wait, without taking the writer: wakes
    /// the indexer task and waits for a catch-up that looked at the store
    /// after the call to finish (the round under way, when its last look
    /// came after the call). After the wait the reader reads what is
    /// indexed; the coverage counts, which never wait, report messages the
    /// catch-up has not reached yet as pending (`unqueued`), so nothing is
    /// silently missing.
    pub(crate) async fn await_indexed(&self) -> Result<(), StoreError> {
        let behind = self.index_behind().await?;
        if behind {
            self.indexer().wait_for_round().await;
        }
        Ok(())
    }

    /// Brings the full-text index and the job queue up to date (migrations 3
    /// and 5), in transactions of at most [`CATCH_UP_CHUNK`] messages: first
    /// removes (or re-indexes) the entries of deleted (or edited) messages
    /// queued in `lexical_stale`, then adds the full-text entries and
    /// embedding jobs of every message above the watermark, each into its
    /// tenant's own full-text table, and moves the watermark past them. A
    /// read when there is nothing to do. The backend's indexer task runs it
    /// in the background (woken by appends and by readers that wait for
    /// it); the writers of the queue (`claim_jobs`, `fail_jobs`,
    /// `enqueue_missing`) run it first. Call it after a bulk import to have
    /// everything indexed before the next search.
    ///
    /// # Errors
    /// A database error.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let lexical = self.lexical().cloned();
        let _feeding = match &lexical {
            Some(_) => Some(self.feeding().lock().await),
            None => None,
        };
        let indexer = self.indexer();
        let mut look = indexer.look();
        let (behind, watermark) = self.index_state().await?;
        if !behind {
            indexer.covered(look);
            return Ok(());
        }
        let store = async {
            loop {
                let lexical = lexical.clone();
                // Each transaction reads what waits afresh: a reader that
                // came before this look is covered by this round.
                look = indexer.look();
                let done = self
                    .write(|conn| async move {
                        if !remove_stale(&conn, lexical.as_ref()).await? {
                            return Ok(false);
                        }
                        let Some((from, newest)) = query_row(&conn, "read watermark", WATERMARK, (), |row| {
                            let r = cells(row, "semantic_watermark");
                            Ok((r.int(0, "caught_up_to")?, r.int(1, "max")?))
                        })
                        .await?
                        else {
                            return Ok(true);
                        };
                        if from >= newest {
                            return Ok(true);
                        }
                        let to = newest.min(from.saturating_add(CATCH_UP_CHUNK));
                        index_range(&conn, from, to).await?;
                        let range = vec![Value::Integer(from), Value::Integer(to)];
                        conn.execute(CATCH_UP_JOBS, range).await.ctx("queue embedding jobs")?;
                        conn.execute("UPDATE semantic_watermark SET caught_up_to = ?1", [to])
                            .await
                            .ctx("move watermark")?;
                        Ok(to >= newest)
                    })
                    .await?;
                if done {
                    break;
                }
            }
            Ok::<(), StoreError>(())
        };
        tracing::Instrument::instrument(store, tracing::info_span!("catch_up.store")).await?;
        if let Some(index) = &lexical {
            // The store is caught up; a feed that fails (another process
            // holding the index, a full disk) leaves the index behind, which
            // searches wait for (bounded) and the next round retries, but
            // must not stop the job queue. Deletions (this process's and
            // every other's) are applied before anything is added, so an
            // entry added at a position handed out again is never removed
            // by an older deletion of that position.
            let feeding = async {
                match self.follow_deletions(index).await {
                    Ok(()) => self.feed_lexical(index, watermark).await,
                    Err(e) => Err(e),
                }
            };
            let fed = tracing::Instrument::instrument(feeding, tracing::info_span!("catch_up.feed")).await;
            if let Err(e) = fed {
                tracing::warn!(error = %e, "feeding the in-process full-text index failed; retrying on the next round");
            }
        }
        indexer.covered(look);
        Ok(())
    }
}

/// Removes up to [`CATCH_UP_CHUNK`] queued stale full-text entries (and
/// re-indexes the edited ones); whether the queue is now empty.
///
/// With an in-process index, the same entries are applied to it first
/// (removed, and the edited ones added again with their new text), before
/// the queue forgets them.
async fn remove_stale(conn: &Connection, lexical: Option<&Arc<dyn LexicalIndex>>) -> Result<bool, StoreError> {
    let mut stale = Vec::new();
    {
        let mut rows = conn
            .query(
                "SELECT s.message_rowid, s.tenant_id, s.reindex, l.tenant FROM lexical_stale s \
                 JOIN lexical_tenants l ON l.id = s.tenant_id ORDER BY s.message_rowid LIMIT ?1",
                [CATCH_UP_CHUNK],
            )
            .await
            .ctx("read stale full-text entries")?;
        while let Some(row) = rows.next().await.ctx("read stale full-text entries")? {
            let r = cells(&row, "lexical_stale");
            let tenant = r.text(3, "tenant")?;
            let tenant = TenantId::parse(tenant).map_err(|e| corrupt("lexical_tenants", "tenant", e.to_string()))?;
            stale.push((r.int(0, "message_rowid")?, r.int(1, "tenant_id")?, r.int(2, "reindex")? != 0, tenant));
        }
    }
    if let Some(index) = lexical.filter(|_| !stale.is_empty()) {
        let mut entries = Vec::new();
        for (rowid, _, _, _) in stale.iter().filter(|s| s.2) {
            let mut rows = conn
                .query(&format!("{LEXICAL_ENTRIES} WHERE f.message_rowid = ?1"), [*rowid])
                .await
                .ctx("read edited message")?;
            if let Some(row) = rows.next().await.ctx("read edited message")? {
                entries.push(lexical_entry(&row)?);
            }
        }
        let removals = stale.iter().map(|(rowid, _, _, tenant)| (tenant.clone(), *rowid)).collect();
        index.apply(removals, entries, None).await?;
    }
    // Migration 20 dropped the tables that deleted messages may still be
    // queued for; they are made again (empty) rather than fail the round.
    let mut made: Vec<i64> = Vec::new();
    for &(rowid, table, reindex, _) in &stale {
        if !made.contains(&table) {
            create_table(conn, table).await?;
            made.push(table);
        }
        let table = lexical_table(table);
        conn.execute(&format!("DELETE FROM {table} WHERE rowid = ?1"), [rowid]).await.ctx("remove full-text entry")?;
        if reindex {
            conn.execute(
                &format!(
                    "INSERT INTO {table} (rowid, content, tools) \
                     SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = ?1"
                ),
                [rowid],
            )
            .await
            .ctx("re-index edited message")?;
        }
        conn.execute("DELETE FROM lexical_stale WHERE message_rowid = ?1", [rowid])
            .await
            .ctx("remove full-text entry")?;
    }
    Ok(i64::try_from(stale.len()).unwrap_or(i64::MAX) < CATCH_UP_CHUNK)
}

/// Indexes the messages with rowids in `(from, to]`, each into its tenant's
/// full-text table (created on the tenant's first message). Rows are read
/// once in rowid order and inserted as runs of one tenant, so a chunk costs
/// one statement per run, not one scan of the range per tenant.
async fn index_range(conn: &Connection, from: i64, to: i64) -> Result<(), StoreError> {
    let mut runs: Vec<(String, i64, i64)> = Vec::new();
    {
        let mut rows = conn
            .query(
                "SELECT m.rowid, t.tenant FROM messages m JOIN threads t ON t.id = m.thread_id \
                 WHERE m.rowid > ?1 AND m.rowid <= ?2 ORDER BY m.rowid",
                [from, to],
            )
            .await
            .ctx("read messages to index")?;
        while let Some(row) = rows.next().await.ctx("read messages to index")? {
            let r = cells(&row, "messages");
            let (rowid, tenant) = (r.int(0, "rowid")?, r.text(1, "tenant")?);
            match runs.last_mut() {
                Some((t, _, last)) if *t == tenant => *last = rowid,
                _ => runs.push((tenant, rowid, rowid)),
            }
        }
    }
    let mut tables: Vec<(String, String)> = Vec::new();
    for (tenant, first, last) in runs {
        let table = match tables.iter().find(|(t, _)| *t == tenant) {
            Some((_, table)) => table.clone(),
            None => {
                let table = tenant_table(conn, &tenant).await?;
                tables.push((tenant, table.clone()));
                table
            }
        };
        conn.execute(
            &format!(
                "INSERT INTO {table} (rowid, content, tools) SELECT message_rowid, content, tools \
                 FROM messages_fts_source WHERE message_rowid >= ?1 AND message_rowid <= ?2"
            ),
            [first, last],
        )
        .await
        .ctx("index messages for full-text search")?;
    }
    Ok(())
}

/// The tenant's full-text table, registered and created when missing.
///
async fn tenant_table(conn: &Connection, tenant: &str) -> Result<String, StoreError> {
    conn.execute("INSERT OR IGNORE INTO lexical_tenants (tenant) VALUES (?1)", [tenant])
        .await
        .ctx("register full-text table")?;
    let id = query_row(
        conn,
        "register full-text table",
        "SELECT id FROM lexical_tenants WHERE tenant = ?1",
        [tenant],
        |row| cells(row, "lexical_tenants").int(0, "id"),
    )
    .await?
    .ok_or_else(|| corrupt("lexical_tenants", "id", "missing after insert"))?;
    create_table(conn, id).await?;
    Ok(lexical_table(id))
}

/// Creates full-text table `id` of `lexical_tenants` when missing.
///
/// Contentless with deletes (SQLite 3.43+): the text lives once, in
/// `messages`; FTS5 keeps only the inverted index and deletes by rowid.
/// Tokenizer `porter unicode61 remove_diacritics 2` (migration 20): words
/// as `unicode61` cuts them (letters and digits, lowercased, accents
/// folded), then Porter-stemmed, so "running" finds "runs"; queries are
/// stemmed alike, and no stop word is dropped. Stemming conflates some
/// names and codes (an English stemmer cuts "Jones" to "jone"), which
/// costs little against the recall it brings on REALTALK
/// (docs/BENCHMARKS.md).
async fn create_table(conn: &Connection, id: i64) -> Result<(), StoreError> {
    let table = lexical_table(id);
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5(content, tools, content = '', \
         contentless_delete = 1, tokenize = 'porter unicode61 remove_diacritics 2')"
    ))
    .await
    .ctx("create full-text table")?;
    Ok(())
}

/// The name of full-text table `id` of `lexical_tenants`: made of an
/// integer only, so no caller text ever reaches SQL.
fn lexical_table(id: i64) -> String {
    format!("lexical_fts_{id}")
}

/// The per-tenant full-text tables (their FTS5 shadow tables excluded), for
/// migration 5's down step.
pub(crate) const LEXICAL_TABLES: &str = "SELECT name FROM sqlite_master WHERE type = 'table' \
     AND name GLOB 'lexical_fts_[0-9]*' AND sql LIKE 'CREATE VIRTUAL TABLE%'";

/// Whether the catch-up has anything to do for the store, the watermark,
/// and the newest deletion-log entry (what an in-process index must have
/// applied).
const BEHIND: &str = "SELECT caught_up_to < (SELECT coalesce(max(rowid), 0) FROM messages) \
     OR EXISTS (SELECT 1 FROM lexical_stale) AS behind, caught_up_to, \
     (SELECT coalesce(max(seq), 0) FROM deletion_log) AS deleted FROM semantic_watermark";

/// The watermark and the newest message's rowid.
const WATERMARK: &str =
    "SELECT caught_up_to, (SELECT coalesce(max(rowid), 0) FROM messages) AS max FROM semantic_watermark";

/// `?1` exclusive, `?2` inclusive rowid bounds: embedding jobs, due from the
/// message's creation, for messages without a vector yet (one embedded
/// inline before the catch-up needs none).
const CATCH_UP_JOBS: &str = "INSERT OR IGNORE INTO embedding_jobs \
     (message_rowid, attempts, next_attempt_at, last_error, created_at, tenant) \
     SELECT m.rowid, 0, m.created_at, NULL, m.created_at, t.tenant FROM messages m \
     JOIN threads t ON t.id = m.thread_id WHERE m.rowid > ?1 AND m.rowid <= ?2 \
     AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid)";

/// `?1` due time, `?2` limit: due, unleased jobs, fair across tenants (see
/// `EmbeddingStore::due_jobs`), with what the embedder needs and the job's
/// rowid.
///
/// `tenants` finds every tenant with a job by a skip scan of
/// `embedding_jobs_tenant_due` (one seek per tenant, migration 7);
/// `picked` takes each tenant's first `?2` due jobs by a range search of the
/// same index, already in due order; `ranked` numbers them per tenant, and
/// the batch takes the first of every tenant, then the second, and so on;
/// `CROSS JOIN` keeps SQLite from scanning `messages` instead (it does
/// without statistics). The work is a few seeks per tenant plus `?2` rows per tenant, whatever the
/// length of the queue: about 1 ms for 100,000 due jobs of two tenants,
/// against about 100 ms for a window over every due job (sqlite3 3.40).
pub(crate) const DUE_JOBS: &str = "WITH RECURSIVE tenants(tenant) AS ( \
         SELECT (SELECT min(tenant) FROM embedding_jobs) \
         UNION ALL \
         SELECT (SELECT min(j.tenant) FROM embedding_jobs j WHERE j.tenant > tenants.tenant) \
         FROM tenants WHERE tenants.tenant IS NOT NULL), \
     picked AS ( \
         SELECT j.message_rowid, j.tenant, j.next_attempt_at, j.attempts FROM tenants, embedding_jobs j \
         WHERE j.message_rowid IN ( \
             SELECT i.message_rowid FROM embedding_jobs i \
             WHERE i.tenant = tenants.tenant AND i.next_attempt_at <= ?1 AND i.leased_until <= ?1 \
             AND NOT EXISTS (SELECT 1 FROM messages dm CROSS JOIN threads dt ON dt.id = dm.thread_id \
                 WHERE dm.rowid = i.message_rowid AND dt.deleted_at IS NOT NULL) \
             ORDER BY i.next_attempt_at, i.message_rowid LIMIT ?2)), \
     ranked AS ( \
         SELECT picked.*, \
         row_number() OVER (PARTITION BY tenant ORDER BY next_attempt_at, message_rowid) AS turn FROM picked) \
     SELECT m.id, m.thread_id, t.tenant, m.content, m.tool_calls, r.attempts, r.message_rowid \
     FROM ranked r CROSS JOIN messages m ON m.rowid = r.message_rowid CROSS JOIN threads t ON t.id = m.thread_id \
     ORDER BY r.turn, r.next_attempt_at, r.message_rowid LIMIT ?2";

/// `?1` now: whether any job is due and unleased (by the old index on due
/// time; the leased ones are few, at most the batches in flight).
const ANY_DUE: &str = "SELECT 1 FROM embedding_jobs WHERE next_attempt_at <= ?1 AND leased_until <= ?1 LIMIT 1";

/// Up to `limit` due jobs at `now` (microseconds) by [`DUE_JOBS`], each with
/// its rowid.
async fn read_due_jobs(conn: &Connection, now: i64, limit: usize) -> Result<Vec<(i64, PendingEmbedding)>, StoreError> {
    let mut rows = conn.query(DUE_JOBS, vec![Value::Integer(now), int(limit)]).await.ctx("read embedding jobs")?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next().await.ctx("read embedding jobs")? {
        let row = exec::values(&row)?;
        let rowid = Cells::new(&row, "embedding_jobs").int(6, "message_rowid")?;
        jobs.push((rowid, embeddings::pending(&row)?));
    }
    Ok(jobs)
}

/// `?1` message id: its rowid, thread and tenant.
const MESSAGE_SCOPE: &str = "SELECT m.rowid, m.thread_id, t.tenant FROM messages m \
     JOIN threads t ON t.id = m.thread_id WHERE m.id = ?1 AND t.deleted_at IS NULL";

/// `?1` model, `?2` exclusive position, `?3` limit: vectors in storage order.
pub(crate) const SCAN_VECTORS: &str = "SELECT v.rowid, m.id, m.thread_id, t.tenant, v.dim, v.vector \
     FROM message_vectors v JOIN messages m ON m.rowid = v.message_rowid JOIN threads t ON t.id = m.thread_id \
     WHERE v.model = ?1 AND v.rowid > ?2 AND t.deleted_at IS NULL ORDER BY v.rowid LIMIT ?3";

fn int(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}
