use std::sync::Arc;
use std::time::Duration;

use memlayer_domain::now;
use memlayer_ports::{Embedder, EmbeddingStore, StoreError, VectorIndex};
use tokio::sync::{Mutex, Notify, watch};

/// How the worker retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Jobs embedded per batch.
    pub batch_size: usize,
    /// Sleep between polls when idle (appends also wake the worker).
    pub poll_interval: Duration,
    /// First retry delay; doubles per failed attempt.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: 64,
            poll_interval: Duration::from_millis(500),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What one round of the worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// Messages embedded and indexed.
    pub embedded: usize,
    /// Jobs whose attempt failed (rescheduled with backoff).
    pub failed: usize,
}

/// Embeds pending messages from the durable job queue, stores their vectors
/// and adds them to the vector index. Failures are recorded on the jobs and
/// retried with exponential backoff: a message is never lost and never
/// silently unsearchable (it stays counted as pending).
#[derive(Debug, Clone)]
pub struct EmbeddingWorker {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn EmbeddingStore>,
    index: Arc<dyn VectorIndex>,
    settings: WorkerSettings,
    wake: Arc<Notify>,
    /// Serialises rounds so two callers never embed the same jobs twice.
    round: Arc<Mutex<()>>,
}

impl EmbeddingWorker {
    /// A worker over these ports.
    #[must_use]
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn EmbeddingStore>,
        index: Arc<dyn VectorIndex>,
        settings: WorkerSettings,
    ) -> Self {
        Self { embedder, store, index, settings, wake: Arc::new(Notify::new()), round: Arc::new(Mutex::new(())) }
    }

    /// Wakes the background loop (after an append).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.min(20));
        self.settings.base_backoff.saturating_mul(factor).min(self.settings.max_backoff)
    }

    /// Embeds one batch of due jobs.
    ///
    /// # Errors
    /// When the store fails; an embedder failure is recorded on the jobs and
    /// reported in [`Round::failed`] instead.
    pub async fn run_once(&self) -> Result<Round, StoreError> {
        let _guard = self.round.lock().await;
        let jobs = self.store.due_jobs(now(), self.settings.batch_size).await?;
        if jobs.is_empty() {
            return Ok(Round::default());
        }
        let texts = jobs.iter().map(|j| j.text.clone()).collect();
        match self.embedder.embed(texts).await {
            Ok(vectors) if vectors.len() == jobs.len() => {
                let done = jobs.iter().map(|j| j.id).zip(vectors).collect();
                let entries = self.store.complete_jobs(done).await?;
                let embedded = entries.len();
                self.index.upsert(entries).await?;
                Ok(Round { embedded, failed: 0 })
            }
            other => {
                let error = match other {
                    Ok(v) => format!("embedder returned {} vectors for {} texts", v.len(), jobs.len()),
                    Err(e) => e.to_string(),
                };
                let attempts = jobs.iter().map(|j| j.attempts).max().unwrap_or(0);
                let delay = self.backoff(attempts);
                let retry_at = now() + delay;
                tracing::warn!(jobs = jobs.len(), attempts = attempts + 1, retry_in = ?delay, %error, "embedding failed");
                let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
                let failed = ids.len();
                self.store.fail_jobs(ids, error, retry_at).await?;
                Ok(Round { embedded: 0, failed })
            }
        }
    }

    /// Runs rounds until no job is due; returns the totals.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn drain(&self) -> Result<Round, StoreError> {
        let mut total = Round::default();
        loop {
            let round = self.run_once().await?;
            total.embedded += round.embedded;
            total.failed += round.failed;
            if round.embedded == 0 {
                return Ok(total);
            }
        }
    }

    /// Runs in the background until `shutdown` turns true.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let idle = match self.run_once().await {
                    Ok(round) => round.embedded == 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "embedding worker: store error");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}
