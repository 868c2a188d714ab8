//! [`memlayer_ports::ThreadStore`] on Postgres: written once in
//! `memlayer_adapters_sql::threads`; here only the sweep's chunk.

use std::num::NonZeroU32;

use async_trait::async_trait;
use memlayer_adapters_sql::threads::ThreadEngine;
use memlayer_ports::{StoreError, Sweep};
use tokio_postgres::types::ToSql;

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::Context as _;

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Borrowed views of boxed parameters, as the driver takes them.
pub(crate) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

memlayer_adapters_sql::thread_store!(PgBackend);

#[async_trait]
impl ThreadEngine for PgBackend {
    async fn sweep_chunk(&self, max_messages: NonZeroU32) -> Result<Sweep, StoreError> {
        let mut client = self.client().await?;
        // Every tenant's marked threads: the sweeper serves them all.
        let tx = begin(&mut client, Access::All).await?;
        let next =
            tx.prepare_cached(&format!("{NEXT_MARKED} FOR UPDATE SKIP LOCKED")).await.ctx("sweep deleted threads")?;
        let any = tx.prepare_cached(NEXT_MARKED).await.ctx("sweep deleted threads")?;
        let Some(row) = tx.query_opt(&next, &[]).await.ctx("sweep deleted threads")? else {
            // Every marked thread (if any) is another sweeper's right now.
            let more = tx.query_opt(&any, &[]).await.ctx("sweep deleted threads")?.is_some();
            tx.commit().await.ctx("sweep deleted threads")?;
            return Ok(Sweep { more, ..Sweep::default() });
        };
        let thread: uuid::Uuid = row.try_get(0).ctx("sweep deleted threads")?;
        // Oldest first; vectors and jobs go by ON DELETE CASCADE.
        let chunk = tx
            .prepare_cached(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages WHERE thread_id = $1 ORDER BY seq LIMIT $2)",
            )
            .await
            .ctx("sweep deleted thread's messages")?;
        let messages = tx
            .execute(&chunk, &[&thread, &i64::from(max_messages.get())])
            .await
            .ctx("sweep deleted thread's messages")?;
        let mut threads = 0;
        if messages < u64::from(max_messages.get()) {
            // Agent states go by ON DELETE CASCADE.
            let row = tx
                .prepare_cached("DELETE FROM threads WHERE id = $1 AND deleted_at IS NOT NULL")
                .await
                .ctx("sweep deleted thread")?;
            threads = tx.execute(&row, &[&thread]).await.ctx("sweep deleted thread")?;
        }
        let more = tx.query_opt(&any, &[]).await.ctx("sweep deleted threads")?.is_some();
        tx.commit().await.ctx("sweep deleted threads")?;
        Ok(Sweep { messages, threads, more })
    }
}

/// The marked thread to sweep next: the oldest mark (partial index
/// `threads_deleted`, migration 9). The sweep locks it `SKIP LOCKED`, so
/// sweepers of several servers on one database take different threads.
const NEXT_MARKED: &str = "SELECT id FROM threads WHERE deleted_at IS NOT NULL ORDER BY deleted_at, id LIMIT 1";
