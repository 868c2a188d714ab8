//! [`memlayer_ports::ThreadStore`] on libSQL: written once in
//! `memlayer_adapters_sql::threads`; here only the sweep's chunk.

use std::num::NonZeroU32;

use async_trait::async_trait;
use libsql::Value;
use memlayer_adapters_sql::threads::ThreadEngine;
use memlayer_ports::{StoreError, Sweep};

use crate::LibsqlBackend;
use crate::error::Context as _;
use crate::rows::{cells, query_row};

memlayer_adapters_sql::thread_store!(LibsqlBackend);

#[async_trait]
impl ThreadEngine for LibsqlBackend {
    async fn sweep_chunk(&self, max_messages: NonZeroU32) -> Result<Sweep, StoreError> {
        let max_messages = max_messages.get();
        self.write(move |conn| async move {
            let Some(thread) =
                query_row(&conn, "sweep deleted threads", NEXT_MARKED, (), |row| cells(row, "threads").blob(0, "id"))
                    .await?
            else {
                return Ok(Sweep::default());
            };
            // Oldest first; the delete trigger removes each message's vectors
            // and job and queues its full-text entry for the catch-up (it
            // finds the tenant through the thread row, still present).
            let messages = conn
                .execute(SWEEP_MESSAGES, vec![Value::Blob(thread.clone()), Value::Integer(i64::from(max_messages))])
                .await
                .ctx("sweep deleted thread's messages")?;
            let mut threads = 0;
            if messages < u64::from(max_messages) {
                // Its agent states and their history (migration 25).
                for delete in SWEEP_STATE {
                    conn.execute(delete, vec![Value::Blob(thread.clone())])
                        .await
                        .ctx("sweep deleted thread's state")?;
                }
                // Its working memory (migration 13), through the partial
                // `thread_id` indexes; the foreign keys refuse the thread
                // row's delete while any is left.
                for delete in SWEEP_WORKING {
                    conn.execute(delete, vec![Value::Blob(thread.clone())])
                        .await
                        .ctx("sweep deleted thread's working memory")?;
                }
                threads = conn
                    .execute("DELETE FROM threads WHERE id = ?1 AND deleted_at IS NOT NULL", vec![Value::Blob(thread)])
                    .await
                    .ctx("sweep deleted thread")?;
            }
            let more = query_row(&conn, "sweep deleted threads", NEXT_MARKED, (), |_| Ok(())).await?.is_some();
            Ok(Sweep { messages, threads, more })
        })
        .await
    }
}

/// `?1` thread, `?2` chunk: its oldest messages, found by a range search of
/// `messages_thread_seq`.
pub(crate) const SWEEP_MESSAGES: &str = "DELETE FROM messages WHERE rowid IN \
     (SELECT rowid FROM messages WHERE thread_id = ?1 ORDER BY seq LIMIT ?2)";

/// `?1` thread: its agent states and their history (primary-key prefixes).
pub(crate) const SWEEP_STATE: [&str; 2] =
    ["DELETE FROM agent_state WHERE thread_id = ?1", "DELETE FROM agent_state_history WHERE thread_id = ?1"];

/// `?1` thread: its working memory, current and kept versions.
pub(crate) const SWEEP_WORKING: [&str; 2] =
    ["DELETE FROM working_memory WHERE thread_id = ?1", "DELETE FROM working_memory_versions WHERE thread_id = ?1"];

/// The marked thread to sweep next: the oldest mark (partial index
/// `threads_deleted`, migration 9).
pub(crate) const NEXT_MARKED: &str =
    "SELECT id FROM threads WHERE deleted_at IS NOT NULL ORDER BY deleted_at, id LIMIT 1";
