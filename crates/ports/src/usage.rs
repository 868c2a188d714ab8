//! [`UsageStore`]: what each tenant stores, counted for its storage quota.

use async_trait::async_trait;
use memlayer_domain::{TenantId, Usage};

use crate::StoreError;

/// A tenant's storage, counted as it changes: the counts the quota checks
/// of [`crate::ThreadStore::create_within`] and
/// [`crate::MessageStore::append_within`] read.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait UsageStore: Send + Sync + std::fmt::Debug {
    /// The tenant's live threads, their live messages and the messages'
    /// [`memlayer_domain::Message::approx_bytes`].
    ///
    /// MUST equal what the tenant stores as of the read: every create,
    /// append, message delete and thread delete committed before it is
    /// counted, a refused write is not, a thread counts no more from its
    /// delete on (before its rows are swept), and another tenant's rows never
    /// count. MUST be zero for a tenant that stores nothing.
    async fn usage(&self, tenant: &TenantId) -> Result<Usage, StoreError>;
}
