//! [`WorkingMemoryStore`]: versioned working-memory documents per resource or
//! thread, with the last versions kept.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{Reach, StateVersion, WorkingContent, WorkingMemory, WorkingScope};

use crate::StoreError;

/// Working memory with optimistic concurrency and kept versions.
///
/// A merge patch is the application's read, merge, validate and
/// [`put_working`](Self::put_working) with the version it read, retried on
/// `Conflict`: atomic, and two updaters of different fields both win.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait WorkingMemoryStore: Send + Sync + std::fmt::Debug {
    /// The current document, or `None` when never written.
    ///
    /// MUST return `NotFound` for a thread scope whose thread does not exist
    /// for this tenant (a resource scope needs no prior row).
    async fn get_working(
        &self,
        who: &(dyn Reach + 'static),
        scope: &WorkingScope,
    ) -> Result<Option<WorkingMemory>, StoreError>;

    /// Stores `content` if the current version equals `expected` (0: absent)
    /// and returns it with version `expected + 1`; keeps the newest `keep`
    /// versions (the new one included) and deletes older ones in the same
    /// transaction.
    ///
    /// MUST return `Conflict` when the current version differs from
    /// `expected`, `NotFound` for a missing thread, and `Invalid` for content
    /// over [`WorkingContent::MAX_BYTES`].
    async fn put_working(
        &self,
        who: &(dyn Reach + 'static),
        scope: &WorkingScope,
        content: WorkingContent,
        expected: StateVersion,
        keep: u32,
    ) -> Result<WorkingMemory, StoreError>;

    /// The kept versions, newest first, at most `limit`.
    ///
    /// MUST return `NotFound` for a missing thread, and an empty list for a
    /// scope never written.
    async fn working_versions(
        &self,
        who: &(dyn Reach + 'static),
        scope: &WorkingScope,
        limit: u32,
    ) -> Result<Vec<WorkingMemory>, StoreError>;
}
