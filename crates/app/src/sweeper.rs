//! The background removal of deleted threads.
//!
//! Deleting a thread only marks it ([`ThreadStore::delete`]): one short
//! transaction, after which the thread is missing for every caller. The
//! [`ThreadSweeper`] then removes what it held, a chunk of
//! `memory.sweep_chunk` messages per transaction
//! ([`ThreadStore::sweep_deleted`]), letting other writers in between
//! chunks, so deleting a thread of 100,000 messages never holds the
//! database's writer for more than one chunk.

use std::sync::Arc;
use std::time::Duration;

use memlayer_ports::{StoreError, Sweep, ThreadStore};
use tokio::sync::{Notify, watch};

/// Messages removed per sweep transaction by default (`memory.sweep_chunk`).
/// Measured on libSQL (docs/BENCHMARKS.md, "Deleting a huge thread"): a
/// chunk of 1,000 holds the writer for a few milliseconds.
pub const DEFAULT_SWEEP_CHUNK: u32 = 1_000;

/// How often an idle sweeper looks for marks anyway (another process on the
/// same database may have made them; deletes through this process wake it).
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Wait when the marked threads left are another sweeper's (another server
/// on the same Postgres database).
const BUSY_ELSEWHERE: Duration = Duration::from_millis(100);
/// Wait after a store error before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Removes deleted threads in bounded chunks, in the background or by hand.
#[derive(Debug, Clone)]
pub struct ThreadSweeper {
    threads: Arc<dyn ThreadStore>,
    chunk: u32,
    wake: Arc<Notify>,
}

impl ThreadSweeper {
    /// A sweeper of `threads` removing at most `chunk` messages per
    /// transaction (at least 1).
    #[must_use]
    pub fn new(threads: Arc<dyn ThreadStore>, chunk: u32) -> Self {
        Self { threads, chunk: chunk.max(1), wake: Arc::new(Notify::new()) }
    }

    /// Wakes the background loop (after a delete).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Messages per transaction.
    #[must_use]
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// One chunk: one transaction.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn run_once(&self) -> Result<Sweep, StoreError> {
        self.threads.sweep_deleted(self.chunk).await
    }

    /// Sweeps until no marked thread is left; returns the totals (`more`
    /// false). Each chunk is its own transaction.
    ///
    /// # Errors
    /// When the store fails; what was swept before stays swept.
    pub async fn drain(&self) -> Result<Sweep, StoreError> {
        let mut total = Sweep::default();
        loop {
            let round = self.run_once().await?;
            total.messages += round.messages;
            total.threads += round.threads;
            if !round.more {
                return Ok(total);
            }
            if round.messages == 0 && round.threads == 0 {
                // Another sweeper holds what is left: let it work.
                tokio::time::sleep(BUSY_ELSEWHERE).await;
            }
        }
    }

    /// Runs in the background until `shutdown` turns true: sweeps whatever
    /// is marked at start (a sweep a crash cut short resumes here), then
    /// sleeps until woken by a delete. Shutdown is checked between chunks,
    /// so stopping waits for one chunk at most.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                let pause = match self.run_once().await {
                    Ok(round) => {
                        if round.threads > 0 {
                            tracing::debug!(messages = round.messages, "deleted thread swept");
                        }
                        if round.messages > 0 || round.threads > 0 {
                            // Let the writers that queued behind this chunk in
                            // before the next one.
                            tokio::task::yield_now().await;
                            continue;
                        }
                        // Marks another sweeper is working on, or none.
                        if round.more { BUSY_ELSEWHERE } else { IDLE_POLL }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "thread sweeper: store error");
                        ERROR_BACKOFF
                    }
                };
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use memlayer_ports::MockThreadStore;

    use super::*;

    /// Started with marks left from before (no wake), the loop sweeps chunk
    /// after chunk without waiting, and stops between chunks on shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sweeps_leftover_marks_at_start_and_stops_between_chunks() {
        let calls = Arc::new(AtomicU64::new(0));
        let mut store = MockThreadStore::new();
        let seen = calls.clone();
        store.expect_sweep_deleted().withf(|chunk| *chunk == 7).returning(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            Ok(Sweep { messages: 7, threads: 0, more: true })
        });
        let sweeper = ThreadSweeper::new(Arc::new(store), 7);
        let (shutdown, rx) = watch::channel(false);
        let task = sweeper.spawn(rx);
        while calls.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        shutdown.send(true).unwrap();
        // A guard against a hang, not a timing assertion.
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("stops on shutdown").unwrap();
        let after = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(calls.load(Ordering::SeqCst), after, "no chunk after stopping");
    }

    #[tokio::test]
    async fn drain_adds_up_the_chunks() {
        let mut store = MockThreadStore::new();
        let mut left = 3;
        store.expect_sweep_deleted().returning(move |_| {
            left -= 1;
            Ok(Sweep { messages: 10, threads: u64::from(left == 0), more: left > 0 })
        });
        let total = ThreadSweeper::new(Arc::new(store), 10).drain().await.unwrap();
        assert_eq!(total, Sweep { messages: 30, threads: 1, more: false });
    }
}
