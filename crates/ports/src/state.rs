//! [`StateStore`]: versioned agent state per thread and agent.
#![cfg_attr(feature = "mocks", allow(unused_parens, reason = "mockall's expansion of `&(dyn Reach + 'static)`"))]

use async_trait::async_trait;
use memlayer_domain::{AgentName, AgentState, Reach, StateVersion, ThreadId};
use serde_json::Value;

use crate::StoreError;

/// Per-thread agent state with optimistic concurrency, for `who` (see
/// [`crate::ThreadStore`]).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The agent's state in the thread, or `None` when never saved.
    ///
    /// MUST return `NotFound` when the thread does not exist for this tenant.
    async fn load(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        agent: &AgentName,
    ) -> Result<Option<AgentState>, StoreError>;

    /// Saves `state` if the stored version equals `expected` (0: not stored yet)
    /// and returns it with version `expected + 1`.
    ///
    /// MUST return `Conflict` when the stored version differs from `expected`
    /// (a stale writer never overwrites a newer state), `NotFound` for a
    /// missing thread, and `Invalid` when `state` is not a JSON object.
    async fn save(
        &self,
        who: &(dyn Reach + 'static),
        thread: ThreadId,
        agent: &AgentName,
        state: Value,
        expected: StateVersion,
    ) -> Result<AgentState, StoreError>;
}
