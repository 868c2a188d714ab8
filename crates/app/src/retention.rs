//! Retention (issue 14): [`RetentionService`] manages a tenant's policies,
//! applies them (on demand: `memlayer prune`; or on an interval: the
//! scheduler [`RetentionService::spawn`] runs, one server at a time by a
//! lease in the database), erases a resource, and keeps the receipts.
//!
//! Every deletion goes through [`RetentionStore`] in bounded steps (one
//! transaction of at most `retention.batch` threads or messages), with a
//! pause of `retention.pause_ms` between steps, so appends queued behind a
//! step wait for one step at most. After each step the in-process vector
//! index forgets what the step deleted (before the run is reported done)
//! and the thread sweeper is woken for the threads it marked.
//!
//! The scheduler's bookkeeping also deletes observability's traces (with
//! their spans, events and links) and system metric samples past their
//! retention (issue 17, [`RetentionService::with_observability`]), in the
//! same bounded steps.

use std::sync::Arc;
use std::time::Duration;

use memlayer_domain::{
    IdRange, NewRetentionPolicy, PolicyId, Reach, ResourceId, RetentionPolicy, RetentionRule, RetentionRun, RunCounts,
    RunId, RunKind, TenantId, now,
};
use memlayer_ports::{IdempotencyStore, ObservabilityStore, PruneStep, RetentionStore, StoreError, VectorIndex};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ThreadSweeper;

/// The lease's name in `retention_leases`.
const LEASE: &str = "retention";

/// `retention.*`: the scheduler of retention policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Run the scheduler in `memlayer serve` (policies still apply by hand
    /// with `memlayer prune` when off).
    pub enabled: bool,
    /// Seconds between two runs, each jittered by up to a tenth either way.
    pub interval_secs: u64,
    /// Most threads or messages deleted per transaction.
    pub batch: u32,
    /// Pause between two steps, in milliseconds (lets queued writers in).
    pub pause_ms: u64,
    /// How long a run's lease lasts without renewal, in seconds (renewed
    /// after each step; another server takes it over only once expired).
    pub lease_secs: u64,
    /// Receipts finished longer ago than this many days are deleted.
    pub receipt_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { enabled: true, interval_secs: 3_600, batch: 500, pause_ms: 10, lease_secs: 300, receipt_days: 90 }
    }
}

impl RetentionConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// The key and what to set.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let bad = |key, reason: &str| Err((key, reason.to_owned()));
        if !(10..=7 * 86_400).contains(&self.interval_secs) {
            return bad("retention.interval_secs", "must be between 10 and 604800 (a week)");
        }
        if !(1..=10_000).contains(&self.batch) {
            return bad("retention.batch", "must be between 1 and 10000");
        }
        if self.pause_ms > 60_000 {
            return bad("retention.pause_ms", "must be at most 60000");
        }
        if !(10..=86_400).contains(&self.lease_secs) {
            return bad("retention.lease_secs", "must be between 10 and 86400");
        }
        if !(1..=36_500).contains(&self.receipt_days) {
            return bad("retention.receipt_days", "must be between 1 and 36500");
        }
        Ok(())
    }

    fn pause(&self) -> Duration {
        Duration::from_millis(self.pause_ms)
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// Most ids a dry run reads per rule (it reports `capped` past them).
const PREVIEW_LIMIT: u32 = 100_000;
/// Expired idempotency records and old receipts deleted per transaction.
const BOOKKEEPING_BATCH: u32 = 1_000;
/// Most bookkeeping transactions per scheduled run.
const BOOKKEEPING_ROUNDS: u32 = 100;

/// What one scheduled run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The receipts of every policy applied (those that deleted nothing
    /// too), and of erasures resumed.
    pub runs: Vec<RetentionRun>,
    /// Expired idempotency records purged.
    pub idempotency_purged: u64,
    /// Old receipts purged.
    pub receipts_purged: u64,
    /// Traces past `observability.retention_days` purged (with their spans).
    pub traces_purged: u64,
    /// System metric samples past `observability.metrics.retention_days` purged.
    pub samples_purged: u64,
}

/// Retention policies, pruning, erasure and receipts.
#[derive(Debug, Clone)]
pub struct RetentionService {
    store: Arc<dyn RetentionStore>,
    index: Option<Arc<dyn VectorIndex>>,
    sweeper: Option<ThreadSweeper>,
    idempotency: Option<Arc<dyn IdempotencyStore>>,
    observability: Option<(Arc<dyn ObservabilityStore>, crate::ObservabilityConfig)>,
    config: RetentionConfig,
    holder: String,
    /// The scheduler's shutdown signal: a run stops between steps on it.
    stop: Option<watch::Receiver<bool>>,
}

impl RetentionService {
    /// A service over `store`, with a lease holder name of its own.
    #[must_use]
    pub fn new(store: Arc<dyn RetentionStore>, config: RetentionConfig) -> Self {
        Self {
            store,
            index: None,
            sweeper: None,
            idempotency: None,
            observability: None,
            config,
            holder: RunId::new().to_string(),
            stop: None,
        }
    }

    /// Deletions also remove entries from this in-process vector index.
    #[must_use]
    pub fn with_index(mut self, index: Arc<dyn VectorIndex>) -> Self {
        self.index = Some(index);
        self
    }

    /// Threads marked deleted wake this sweeper.
    #[must_use]
    pub fn with_sweeper(mut self, sweeper: ThreadSweeper) -> Self {
        self.sweeper = Some(sweeper);
        self
    }

    /// The scheduler also purges this store's expired records.
    #[must_use]
    pub fn with_idempotency(mut self, idempotency: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// The scheduler also deletes traces and system metric samples past
    /// `observability.retention_days` and `observability.metrics.retention_days`
    /// from this store, in transactions of `retention.batch` with the
    /// pause between them.
    #[must_use]
    pub fn with_observability(
        mut self,
        store: Arc<dyn ObservabilityStore>,
        config: crate::ObservabilityConfig,
    ) -> Self {
        self.observability = Some((store, config));
        self
    }

    /// Deletes the traces and samples past their retention, in bounded
    /// transactions with the configured pause between them; returns how
    /// many traces and samples it deleted.
    ///
    /// # Errors
    /// A store error (what was deleted stays deleted).
    pub async fn purge_observability(&self) -> Result<(u64, u64), StoreError> {
        let Some((store, config)) = &self.observability else { return Ok((0, 0)) };
        let now_ns = memlayer_domain::observability::time_to_ns(now());
        let (mut traces, mut samples) = (0, 0);
        let batch = self.config.batch;
        loop {
            let n = store.purge_traces(config.trace_cutoff_ns(now_ns), batch).await?;
            traces += n;
            if n < u64::from(batch) {
                break;
            }
            self.between_steps().await?;
        }
        loop {
            let n = store.purge_metrics(config.metric_cutoff_ns(now_ns), batch).await?;
            samples += n;
            if n < u64::from(batch) {
                break;
            }
            self.between_steps().await?;
        }
        Ok((traces, samples))
    }

    /// The store (to inspect or hold the lease, as another server would).
    #[must_use]
    pub fn store(&self) -> Arc<dyn RetentionStore> {
        self.store.clone()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RetentionConfig {
        &self.config
    }

    /// Creates a policy.
    ///
    /// # Errors
    /// `Invalid` naming the field; a store error.
    pub async fn create_policy(
        &self,
        tenant: &TenantId,
        new: NewRetentionPolicy,
    ) -> Result<RetentionPolicy, StoreError> {
        new.validate()?;
        self.store.create_policy(tenant, new).await
    }

    /// One policy.
    ///
    /// # Errors
    /// `NotFound`; a store error.
    pub async fn get_policy(&self, tenant: &TenantId, id: PolicyId) -> Result<RetentionPolicy, StoreError> {
        self.store.get_policy(tenant, id).await
    }

    /// The tenant's policies, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn list_policies(&self, tenant: &TenantId) -> Result<Vec<RetentionPolicy>, StoreError> {
        self.store.list_policies(tenant).await
    }

    /// Replaces a policy's scope and rules.
    ///
    /// # Errors
    /// `Invalid` naming the field, `NotFound`; a store error.
    pub async fn replace_policy(
        &self,
        tenant: &TenantId,
        id: PolicyId,
        new: NewRetentionPolicy,
    ) -> Result<RetentionPolicy, StoreError> {
        new.validate()?;
        self.store.replace_policy(tenant, id, new).await
    }

    /// Deletes a policy (what it deleted stays deleted).
    ///
    /// # Errors
    /// `NotFound`; a store error.
    pub async fn delete_policy(&self, tenant: &TenantId, id: PolicyId) -> Result<(), StoreError> {
        self.store.delete_policy(tenant, id).await
    }

    /// The tenant's receipts, newest first, after `before`, at most `limit`.
    ///
    /// # Errors
    /// A store error.
    pub async fn list_runs(
        &self,
        tenant: &TenantId,
        before: Option<RunId>,
        limit: u32,
    ) -> Result<Vec<RetentionRun>, StoreError> {
        self.store.list_runs(tenant, before, limit).await
    }

    /// Makes the vector index forget what a step deleted and wakes the
    /// sweeper for the threads it marked.
    async fn forget(&self, tenant: &TenantId, step: &PruneStep) -> Result<(), StoreError> {
        if let Some(index) = &self.index {
            if !step.messages.is_empty() {
                index.remove(step.messages.clone()).await?;
            }
            for thread in &step.threads {
                index.remove_thread(tenant, *thread).await?;
            }
        }
        if !step.threads.is_empty()
            && let Some(sweeper) = &self.sweeper
        {
            sweeper.wake();
        }
        Ok(())
    }

    fn record(run: &mut RetentionRun, step: &PruneStep) {
        run.counts.add(&step.counts);
        for t in &step.threads {
            IdRange::widen(&mut run.thread_ids, t.as_uuid());
        }
        for m in &step.messages {
            IdRange::widen(&mut run.message_ids, m.as_uuid());
        }
    }

    /// Applies `policy` once: each rule it sets, in bounded steps until
    /// nothing is left (or, `dry_run`, what would go, deleting nothing).
    /// Every run writes its receipt: a dry run's (marked `dry_run`), one
    /// that deleted nothing, and one an error cut short (left unfinished,
    /// with what its finished steps deleted).
    ///
    /// # Errors
    /// A store error; what earlier steps deleted stays deleted (and the
    /// index has forgotten it).
    pub async fn apply(&self, policy: &RetentionPolicy, dry_run: bool) -> Result<RetentionRun, StoreError> {
        self.apply_observed(policy, dry_run, &|_| {}).await
    }

    /// [`RetentionService::apply`], telling `progress` what each step
    /// deleted (or, for a dry run, each rule would delete).
    async fn apply_observed(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
        progress: &(dyn Fn(&RunCounts) + Send + Sync),
    ) -> Result<RetentionRun, StoreError> {
        let at = now();
        let mut run = RetentionRun::start(policy.tenant.clone(), RunKind::Prune, at);
        run.policy_id = Some(policy.id);
        run.dry_run = dry_run;
        let applied = self.apply_rules(policy, dry_run, at, &mut run, progress).await;
        if applied.is_ok() {
            run.finished_at = Some(now());
        }
        let saved = self.store.save_run(&run).await;
        match (applied, saved) {
            (Ok(()), Ok(())) => Ok(run),
            (Ok(()), Err(e)) => Err(e),
            (Err(e), saved) => {
                if let Err(not_saved) = saved {
                    tracing::warn!(run = %run.id, error = %not_saved, "the receipt of a prune cut short was not stored");
                }
                Err(e)
            }
        }
    }

    async fn apply_rules(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
        at: memlayer_domain::Timestamp,
        run: &mut RetentionRun,
        progress: &(dyn Fn(&RunCounts) + Send + Sync),
    ) -> Result<(), StoreError> {
        for rule in RetentionRule::ALL {
            if policy.rules.limit(rule).is_none() {
                continue;
            }
            if dry_run {
                let step = self.store.prune_preview(policy, rule, at, PREVIEW_LIMIT).await?;
                Self::record(run, &step);
                progress(&step.counts);
                continue;
            }
            loop {
                let step = self.store.prune_step(policy, rule, at, self.config.batch).await?;
                self.forget(&policy.tenant, &step).await?;
                Self::record(run, &step);
                progress(&step.counts);
                if !step.more {
                    break;
                }
                self.between_steps().await?;
            }
        }
        Ok(())
    }

    /// Lets queued writers in between two steps, and keeps the lease if
    /// this run holds it.
    async fn between_steps(&self) -> Result<(), StoreError> {
        tokio::time::sleep(self.config.pause()).await;
        if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Err(StoreError::Unavailable("retention run stopped for shutdown; the next run continues".into()));
        }
        let at = now();
        // Renewing is harmless when the run is by hand (the lease is then
        // free or expired, or this process's): it keeps another server's
        // scheduler from starting a concurrent run.
        let _ = self.store.try_lease(LEASE, &self.holder, at, at + self.config.lease()).await?;
        Ok(())
    }

    /// Applies every policy of `tenant` (or of every tenant) once: what
    /// `memlayer prune` does. Returns a receipt per policy.
    ///
    /// # Errors
    /// A store error.
    pub async fn prune(&self, tenant: Option<&TenantId>, dry_run: bool) -> Result<Vec<RetentionRun>, StoreError> {
        self.prune_observed(tenant, dry_run, &|_| {}).await
    }

    /// [`RetentionService::prune`], telling `progress` what each step
    /// deleted (each rule's count, for a dry run) as it goes: what
    /// `memlayer prune` shows on a terminal.
    ///
    /// # Errors
    /// A store error.
    pub async fn prune_observed(
        &self,
        tenant: Option<&TenantId>,
        dry_run: bool,
        progress: &(dyn Fn(&RunCounts) + Send + Sync),
    ) -> Result<Vec<RetentionRun>, StoreError> {
        let policies = match tenant {
            Some(t) => self.store.list_policies(t).await?,
            None => self.store.all_policies().await?,
        };
        let mut runs = Vec::with_capacity(policies.len());
        for policy in &policies {
            runs.push(self.apply_observed(policy, dry_run, progress).await?);
        }
        Ok(runs)
    }

    /// About what [`RetentionService::prune`] would delete now, summed over
    /// the policies of `tenant` (or of every tenant), read without writing a
    /// receipt: the total of `memlayer prune`'s progress bar. Each rule's
    /// count stops at 100,000, and a message two policies select is counted
    /// twice.
    ///
    /// # Errors
    /// A store error.
    pub async fn estimate(&self, tenant: Option<&TenantId>) -> Result<RunCounts, StoreError> {
        let policies = match tenant {
            Some(t) => self.store.list_policies(t).await?,
            None => self.store.all_policies().await?,
        };
        let (at, mut total) = (now(), RunCounts::default());
        for policy in &policies {
            for rule in RetentionRule::ALL {
                if policy.rules.limit(rule).is_some() {
                    total.add(&self.store.prune_preview(policy, rule, at, PREVIEW_LIMIT).await?.counts);
                }
            }
        }
        Ok(total)
    }

    /// Erases everything of `resource` (its threads, pinned or not, with
    /// all they hold, and its working memory), in bounded steps; the
    /// receipt is stored unfinished first (the durable mark a crash leaves
    /// for [`RetentionService::resume_erasures`]), each step adds what it
    /// deleted to it in the step's transaction, and it is finished at the
    /// end.
    ///
    /// # Errors
    /// `NotFound` for a caller bound to another resource; a store error
    /// (the erasure stays marked and resumes at the next scheduled run).
    pub async fn erase_resource(
        &self,
        who: &(impl Reach + 'static),
        resource: &ResourceId,
    ) -> Result<RetentionRun, StoreError> {
        if !who.reaches(Some(resource)) {
            return Err(StoreError::not_found("resource", resource));
        }
        let mut run = RetentionRun::start(who.tenant().clone(), RunKind::Erase, now());
        run.resource_id = Some(resource.clone());
        self.store.save_run(&run).await?;
        self.continue_erasure(run).await
    }

    async fn continue_erasure(&self, mut run: RetentionRun) -> Result<RetentionRun, StoreError> {
        let resource = run.resource_id.clone().ok_or_else(|| StoreError::backend("an erasure without a resource"))?;
        loop {
            // The step adds what it deletes to the stored receipt in its
            // own transaction; `run` keeps the same sums in memory.
            let step = self.store.erase_step(&run.tenant, &resource, Some(run.id), self.config.batch).await?;
            self.forget(&run.tenant, &step).await?;
            Self::record(&mut run, &step);
            if !step.more {
                break;
            }
            self.between_steps().await?;
        }
        run.finished_at = Some(now());
        self.store.save_run(&run).await?;
        Ok(run)
    }

    /// Finishes the erasures a crash cut short. Their receipts are whole:
    /// every step stored what it deleted in the receipt in its own
    /// transaction, so the stored receipt a resumed run starts from holds
    /// every step that committed before the crash.
    ///
    /// # Errors
    /// A store error.
    pub async fn resume_erasures(&self) -> Result<Vec<RetentionRun>, StoreError> {
        let mut done = Vec::new();
        for run in self.store.unfinished_erasures().await? {
            tracing::info!(run = %run.id, tenant = %run.tenant, "resuming an erasure cut short");
            done.push(self.continue_erasure(run).await?);
        }
        Ok(done)
    }

    /// One scheduled run, if this process gets the lease (else `None`:
    /// another server's run is under way): unfinished erasures, every
    /// tenant's policies, then the bookkeeping (expired idempotency records,
    /// receipts older than `retention.receipt_days`).
    ///
    /// # Errors
    /// A store error; the lease is given back either way.
    pub async fn run_scheduled(&self) -> Result<Option<ScheduledRun>, StoreError> {
        let at = now();
        if !self.store.try_lease(LEASE, &self.holder, at, at + self.config.lease()).await? {
            return Ok(None);
        }
        let result = self.scheduled_round().await;
        if let Err(e) = self.store.release_lease(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "retention: giving the lease back failed; it expires on its own");
        }
        result.map(Some)
    }

    async fn scheduled_round(&self) -> Result<ScheduledRun, StoreError> {
        let mut report = ScheduledRun { runs: self.resume_erasures().await?, ..ScheduledRun::default() };
        for policy in self.store.all_policies().await? {
            report.runs.push(self.apply(&policy, false).await?);
            self.between_steps().await?;
        }
        if let Some(idempotency) = &self.idempotency {
            for _ in 0..BOOKKEEPING_ROUNDS {
                let n = idempotency.purge_expired(now(), BOOKKEEPING_BATCH).await?;
                report.idempotency_purged += n;
                if n < u64::from(BOOKKEEPING_BATCH) {
                    break;
                }
            }
        }
        let (traces, samples) = self.purge_observability().await?;
        report.traces_purged = traces;
        report.samples_purged = samples;
        let before = now() - Duration::from_secs(self.config.receipt_days * 86_400);
        for _ in 0..BOOKKEEPING_ROUNDS {
            let n = self.store.purge_runs(before, BOOKKEEPING_BATCH).await?;
            report.receipts_purged += n;
            if n < u64::from(BOOKKEEPING_BATCH) {
                break;
            }
        }
        Ok(report)
    }

    /// The wait before the next run: `retention.interval_secs`, give or take
    /// up to a tenth (so servers started together drift apart).
    fn jittered(&self) -> Duration {
        let mut bytes = [0u8; 4];
        let r = if getrandom::fill(&mut bytes).is_ok() { u32::from_le_bytes(bytes) } else { u32::MAX / 2 };
        jitter(Duration::from_secs(self.config.interval_secs), r)
    }

    /// Runs the scheduler until `shutdown` turns true: a first run after a
    /// jittered tenth of the interval (resuming erasures a crash cut short),
    /// then one per jittered interval. A run in progress stops between two
    /// steps on shutdown (the next run continues it).
    pub fn spawn(mut self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        self.stop = Some(shutdown.clone());
        tokio::spawn(async move {
            let mut wait = self.jittered() / 10;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
                // Not cancelled mid-step: the run stops between steps on shutdown.
                match self.run_scheduled().await {
                    Ok(Some(report)) => tracing::info!(
                        runs = report.runs.len(),
                        idempotency_purged = report.idempotency_purged,
                        receipts_purged = report.receipts_purged,
                        traces_purged = report.traces_purged,
                        samples_purged = report.samples_purged,
                        "retention run done"
                    ),
                    Ok(None) => tracing::debug!("retention: another server holds the lease"),
                    Err(e) => tracing::warn!(error = %e, "retention run: store error; retried next interval"),
                }
                wait = self.jittered();
            }
        })
    }
}

/// `interval`, give or take up to a tenth: `r` (a random number) 0 is nine
/// tenths of it, `u32::MAX` eleven tenths, linearly between.
fn jitter(interval: Duration, r: u32) -> Duration {
    let tenth = interval / 10;
    // r / u32::MAX in [0, 1] scales a fifth of the interval around -tenth.
    let offset = tenth.mul_f64(2.0 * f64::from(r) / f64::from(u32::MAX));
    interval - tenth + offset
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use memlayer_ports::MockRetentionStore;

    use super::*;

    #[test]
    fn the_jitter_stays_within_a_tenth_of_the_interval() {
        let interval = Duration::from_secs(3_600);
        let (low, high) = (Duration::from_secs(3_240), Duration::from_secs(3_960));
        assert_eq!(jitter(interval, 0), low);
        assert_eq!(jitter(interval, u32::MAX), high);
        let middle = jitter(interval, u32::MAX / 2);
        assert!(middle.abs_diff(interval) < Duration::from_millis(1), "{middle:?}");
        let mut last = Duration::ZERO;
        for r in (0..=u32::MAX).step_by(1 << 24) {
            let d = jitter(interval, r);
            assert!((low..=high).contains(&d) && d >= last, "r {r}: {d:?} after {last:?}");
            last = d;
        }
        let service = RetentionService::new(Arc::new(MockRetentionStore::new()), RetentionConfig::default());
        let draws: Vec<Duration> = (0..200).map(|_| service.jittered()).collect();
        assert!(draws.iter().all(|d| (low..=high).contains(d)), "{draws:?}");
        assert!(draws.iter().any(|d| *d != draws[0]), "random draws differ");
    }

    /// The scheduler's first run comes a jittered tenth of the interval after
    /// it starts, each next one a jittered interval after the last, and
    /// shutdown ends it; on a paused clock, so no test time passes.
    #[tokio::test(start_paused = true)]
    async fn the_scheduler_runs_on_a_jittered_interval() {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut store = MockRetentionStore::new();
        let counted = runs.clone();
        // Another server holds the lease: each run is one call, then waits.
        store.expect_try_lease().returning(move |_, _, _, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(false)
        });
        let config = RetentionConfig { interval_secs: 1_000, ..RetentionConfig::default() };
        let (stop, shutdown) = watch::channel(false);
        let task = RetentionService::new(Arc::new(store), config).spawn(shutdown);
        let at = |secs| async move { tokio::time::sleep(Duration::from_secs(secs)).await };
        let count = || runs.load(Ordering::SeqCst);
        // First run within [90, 110] s of the start.
        at(89).await;
        assert_eq!(count(), 0, "not before nine tenths of a tenth");
        at(22).await; // 111 s
        assert_eq!(count(), 1, "once by eleven tenths of a tenth");
        // The next one [900, 1100] s after the first: in [990, 1210] s.
        at(878).await; // 989 s
        assert_eq!(count(), 1, "not before nine tenths of the interval");
        at(222).await; // 1211 s
        assert_eq!(count(), 2, "once by eleven tenths of the interval");
        stop.send(true).unwrap();
        task.await.unwrap();
        at(10_000).await;
        assert_eq!(count(), 2, "no run after shutdown");
    }
}
