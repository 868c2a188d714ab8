//! [`RetentionStore`]: retention policies, the bounded steps that apply
//! them and erase a resource, their receipts, and the lease that keeps one
//! run at a time across servers.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{
    MessageId, NewRetentionPolicy, PolicyId, ResourceId, RetentionPolicy, RetentionRule, RetentionRun, RunCounts,
    RunId, TenantId, ThreadId, Timestamp,
};

use crate::StoreError;

/// What one bounded step deleted (or, for a preview, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneStep {
    /// Threads marked deleted (the sweeper removes their rows; the vector
    /// index must forget them).
    pub threads: Vec<ThreadId>,
    /// Messages deleted one by one (the vector index must forget them).
    pub messages: Vec<MessageId>,
    /// Counts per kind (`messages` includes the deleted threads' messages).
    pub counts: RunCounts,
    /// Whether the step stopped at its limit (call again).
    pub more: bool,
}

/// Retention's storage.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RetentionStore: Send + Sync + std::fmt::Debug {
    /// Stores a new policy of `tenant`.
    ///
    /// MUST return `Invalid` naming the field for rules that
    /// [`NewRetentionPolicy::validate`] refuses, and `Invalid` on `policies`
    /// past [`memlayer_domain::MAX_POLICIES`].
    async fn create_policy(&self, tenant: &TenantId, new: NewRetentionPolicy) -> Result<RetentionPolicy, StoreError>;

    /// MUST return `NotFound` for another tenant's or a missing policy.
    async fn get_policy(&self, tenant: &TenantId, id: PolicyId) -> Result<RetentionPolicy, StoreError>;

    /// The tenant's policies, oldest first.
    async fn list_policies(&self, tenant: &TenantId) -> Result<Vec<RetentionPolicy>, StoreError>;

    /// Every tenant's policies (the scheduler's round).
    async fn all_policies(&self) -> Result<Vec<RetentionPolicy>, StoreError>;

    /// Replaces a policy's scope and rules. MUST return `NotFound` as
    /// [`RetentionStore::get_policy`] and `Invalid` as
    /// [`RetentionStore::create_policy`].
    async fn replace_policy(
        &self,
        tenant: &TenantId,
        id: PolicyId,
        new: NewRetentionPolicy,
    ) -> Result<RetentionPolicy, StoreError>;

    /// MUST return `NotFound` as [`RetentionStore::get_policy`].
    async fn delete_policy(&self, tenant: &TenantId, id: PolicyId) -> Result<(), StoreError>;

    /// Applies one rule of `policy` as of `now`, in ONE transaction deleting
    /// at most `limit` threads (marked, as `ThreadStore::delete` does) or
    /// messages (deleted, as `MessageStore::delete` does), never of a
    /// pinned thread nor outside the policy's scope.
    ///
    /// MUST, in the same transaction: release what it frees from the
    /// tenant's usage; for deleted messages, remove their vectors, jobs,
    /// full-text entries and token counts, and delete the summary versions
    /// that cover only deleted messages (keeping a thread's newest one when
    /// the rule is `max_messages_per_thread` with `only_summarized`: it
    /// stands for what was pruned); delete `Idempotency-Key` records that
    /// hold a deleted thread's id (for message deletes: recorded no later
    /// than the newest deleted message). MUST say `more` when it stopped at
    /// `limit`. A rule the policy does not set deletes nothing.
    async fn prune_step(
        &self,
        policy: &RetentionPolicy,
        rule: RetentionRule,
        now: Timestamp,
        limit: u32,
    ) -> Result<PruneStep, StoreError>;

    /// What [`RetentionStore::prune_step`] would delete, at most `limit`
    /// threads or messages, deleting nothing (`more` when capped).
    async fn prune_preview(
        &self,
        policy: &RetentionPolicy,
        rule: RetentionRule,
        now: Timestamp,
        limit: u32,
    ) -> Result<PruneStep, StoreError>;

    /// One step of erasing `resource` of `tenant`, in ONE transaction: marks
    /// at most `limit` of its live threads deleted (pinned or not), releases
    /// their usage and deletes `Idempotency-Key` records holding their ids;
    /// once no thread is left, deletes the resource's working memory (every
    /// version) and says `more: false`.
    ///
    /// With `run`, the erasure's receipt (stored by
    /// [`RetentionStore::save_run`]), MUST in the same transaction add what
    /// the step deleted to that stored receipt (its counts and thread and
    /// message id ranges), so a receipt read after a crash holds every step
    /// that committed; MUST return `NotFound` (deleting nothing) when no
    /// such receipt of `tenant` is stored.
    async fn erase_step(
        &self,
        tenant: &TenantId,
        resource: &ResourceId,
        run: Option<RunId>,
        limit: u32,
    ) -> Result<PruneStep, StoreError>;

    /// Stores a receipt, or replaces the one with its id (an erasure's
    /// progress).
    async fn save_run(&self, run: &RetentionRun) -> Result<(), StoreError>;

    /// The tenant's receipts newest first, after `before` (a run id) when
    /// given, at most `limit`.
    async fn list_runs(
        &self,
        tenant: &TenantId,
        before: Option<RunId>,
        limit: u32,
    ) -> Result<Vec<RetentionRun>, StoreError>;

    /// Every tenant's erasures not finished (cut short by a crash), oldest
    /// first.
    async fn unfinished_erasures(&self) -> Result<Vec<RetentionRun>, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `until`.
    ///
    /// MUST return `true` when the lease was free, expired (`expires_at <=
    /// now`) or already `holder`'s, and `false` (changing nothing) while
    /// another holder's has not expired; of concurrent takers of a free
    /// lease exactly one gets it.
    async fn try_lease(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError>;

    /// Gives the lease back if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Deletes at most `limit` receipts of every tenant finished before
    /// `before`, and at most `limit` of prunes never finished (cut short by
    /// an error) started before it; returns how many. An unfinished
    /// erasure's receipt stays (it is resumed).
    async fn purge_runs(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
