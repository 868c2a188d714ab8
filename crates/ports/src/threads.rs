//! [`ThreadStore`]: threads of a tenant, created, patched, deleted with
//! their messages and state, and listed newest first.

use async_trait::async_trait;
use memlayer_domain::{
    Cursor, NewThread, Page, PageSize, ResourceId, TenantId, Thread, ThreadFilter, ThreadId, ThreadPatch,
};

use crate::StoreError;

/// Conversation threads.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ThreadStore: Send + Sync + std::fmt::Debug {
    /// Creates a thread with a new time-ordered id, `last_seq` 0 and
    /// `created_at == updated_at`.
    ///
    /// MUST return the stored thread whole.
    async fn create(&self, tenant: &TenantId, new: NewThread) -> Result<Thread, StoreError>;

    /// MUST return `NotFound` when the thread does not exist or belongs to
    /// another tenant.
    async fn get(&self, tenant: &TenantId, id: ThreadId) -> Result<Thread, StoreError>;

    /// The ids of the tenant's threads of `resource`, in id order (what a
    /// search scoped to a resource covers); empty when it has none.
    async fn resource_threads(&self, tenant: &TenantId, resource: &ResourceId) -> Result<Vec<ThreadId>, StoreError>;

    /// Lists the tenant's threads matching `filter`, newest first (by id).
    ///
    /// MUST return at most `limit` threads after the cursor's last thread and
    /// a `next_cursor` exactly when more match; MUST never skip or repeat a
    /// thread across pages; MUST return `Invalid` for a cursor issued for
    /// another tenant or filter, and for more metadata filters than
    /// [`ThreadFilter::check`] accepts.
    async fn list(
        &self,
        tenant: &TenantId,
        filter: &ThreadFilter,
        cursor: Option<Cursor>,
        limit: PageSize,
    ) -> Result<Page<Thread>, StoreError>;

    /// Applies `patch` and bumps `updated_at`; an empty patch changes nothing.
    ///
    /// MUST return `NotFound` as [`ThreadStore::get`]; MUST return the updated thread.
    async fn update(&self, tenant: &TenantId, id: ThreadId, patch: ThreadPatch) -> Result<Thread, StoreError>;

    /// Deletes the thread with its messages and agent states, atomically.
    ///
    /// MUST return `NotFound` as [`ThreadStore::get`]; after success nothing
    /// of the thread is readable.
    async fn delete(&self, tenant: &TenantId, id: ThreadId) -> Result<(), StoreError>;
}
