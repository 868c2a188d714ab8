//! The [`EmbeddingWorker`]: drains the embedding job queue under leases,
//! embeds, stores and indexes, splitting a failed batch to isolate the texts
//! that fail.

use std::sync::Arc;
use std::time::Duration;

use memlayer_domain::{Embedding, MessageId, now};
use memlayer_ports::{Embedder, EmbeddingStore, PendingEmbedding, StoreError, VectorIndex};
use std::future::Future;
use std::pin::Pin;
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
    /// How long a claimed batch stays leased to this worker: other workers
    /// (another server on the same database) do not take its jobs before
    /// then, and the jobs of a worker that died come back after it. Far
    /// longer than a batch ever takes (seconds), so a live worker never
    /// loses its batch to another.
    pub lease: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: 64,
            poll_interval: Duration::from_millis(500),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            lease: Duration::from_secs(300),
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
///
/// Each round claims a batch with a lease ([`EmbeddingStore::claim_jobs`]),
/// so several workers, in one process or in several servers on one
/// database, share the queue without embedding a job twice. When a batch
/// fails for a reason other than the embedder being unavailable, it is split
/// in halves and each half retried, recursively down to single texts, so one
/// bad message fails alone and its batch-mates are embedded: at most
/// `2·log2(batch)` extra embed calls per bad message, each on fewer texts
/// (a batch where every text fails costs `2·batch − 1` calls over
/// `batch·(log2(batch) + 1)` texts).
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
        let at = now();
        let jobs = self.store.claim_jobs(at, self.settings.batch_size, at + self.settings.lease).await?;
        if jobs.is_empty() {
            return Ok(Round::default());
        }
        // The span begins once there is a batch: an idle poll traces nothing.
        let span = tracing::info_span!("embed.batch", jobs = jobs.len(), embedded = tracing::field::Empty);
        tracing::Instrument::instrument(self.embed_batch(jobs), span).await
    }

    async fn embed_batch(&self, jobs: Vec<PendingEmbedding>) -> Result<Round, StoreError> {
        let mut outcome = Outcome::default();
        embed_isolating(self.embedder.as_ref(), &jobs, &mut outcome).await;
        let mut round = Round::default();
        if !outcome.done.is_empty() {
            let entries = self.store.complete_jobs(outcome.done).await?;
            round.embedded = entries.len();
            tracing::Span::current().record("embedded", round.embedded);
            self.index.upsert(entries).await?;
        }
        for (failed, error) in outcome.failed {
            let attempts = failed.iter().map(|j| j.attempts).max().unwrap_or(0);
            let delay = self.backoff(attempts);
            let retry_at = now() + delay;
            tracing::warn!(jobs = failed.len(), attempts = attempts + 1, retry_in = ?delay, %error, "embedding failed");
            round.failed += failed.len();
            self.store.fail_jobs(failed.iter().map(|j| j.id).collect(), error, retry_at).await?;
        }
        Ok(round)
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

/// What embedding a batch came to: the vectors made, and the jobs that
/// failed, in groups sharing one error.
#[derive(Default)]
struct Outcome {
    done: Vec<(MessageId, Embedding)>,
    failed: Vec<(Vec<PendingEmbedding>, String)>,
}

/// Embeds `jobs`; when that fails for a reason the texts may cause (anything
/// but an unavailable embedder, which would fail every half alike), splits
/// them in halves and embeds each alone, recursively, so only the texts
/// that fail on their own are recorded as failed.
fn embed_isolating<'a>(
    embedder: &'a dyn Embedder,
    jobs: &'a [PendingEmbedding],
    outcome: &'a mut Outcome,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let texts = jobs.iter().map(|j| j.text.clone()).collect();
        let error = match embedder.embed(texts).await {
            Ok(vectors) if vectors.len() == jobs.len() => {
                outcome.done.extend(jobs.iter().map(|j| j.id).zip(vectors));
                return;
            }
            Ok(vectors) => {
                StoreError::backend(format!("embedder returned {} vectors for {} texts", vectors.len(), jobs.len()))
            }
            Err(e) => e,
        };
        if jobs.len() == 1 || error.is_retryable() {
            outcome.failed.push((jobs.to_vec(), error.to_string()));
            return;
        }
        tracing::debug!(jobs = jobs.len(), %error, "embedding batch failed: retrying its halves");
        let (left, right) = jobs.split_at(jobs.len() / 2);
        embed_isolating(embedder, left, outcome).await;
        embed_isolating(embedder, right, outcome).await;
    })
}
