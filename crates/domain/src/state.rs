//! Per-thread agent state ([`AgentState`]): a JSON object with a version for
//! optimistic concurrency.

use serde::Serialize;
use serde_json::Value;

use crate::{AgentName, DomainError, ThreadId, Timestamp};

/// Optimistic-concurrency version of an agent state: 0 means "does not exist
/// yet", each successful save adds one.
pub type StateVersion = u64;

/// An agent's JSON state for one thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentState {
    /// The thread.
    pub thread_id: ThreadId,
    /// The agent.
    pub agent_id: AgentName,
    /// The state object.
    pub state: Value,
    /// Version after the last save (at least 1 once stored).
    pub version: StateVersion,
    /// Time of the last save.
    pub updated_at: Timestamp,
}

impl AgentState {
    /// Largest accepted serialised state, in bytes.
    pub const MAX_BYTES: usize = 1024 * 1024;

    /// Validates a state value: a JSON object of acceptable size, without
    /// NUL ([`crate::no_nul_json`]).
    ///
    /// # Errors
    /// [`DomainError`] on `state`.
    pub fn validate(state: &Value) -> Result<(), DomainError> {
        if !state.is_object() {
            return Err(DomainError::new(
                "state",
                format!("must be a JSON object, got {}", crate::thread::json_kind(state)),
            ));
        }
        let size = serde_json::to_vec(state).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > Self::MAX_BYTES {
            return Err(DomainError::new(
                "state",
                format!("is {size} bytes, at most {} are accepted", Self::MAX_BYTES),
            ));
        }
        crate::no_nul_json("state", state)
    }

    /// The version a save with `expected` stores: `expected + 1`, which
    /// must fit a signed 64-bit column (every backend stores it as one).
    ///
    /// # Errors
    /// [`DomainError`] on `expected_version` when it is
    /// [`MAX_EXPECTED_VERSION`](Self::MAX_EXPECTED_VERSION) or more.
    pub fn next_version(expected: StateVersion) -> Result<StateVersion, DomainError> {
        if expected > Self::MAX_EXPECTED_VERSION {
            return Err(DomainError::new(
                "expected_version",
                format!("is {expected}, at most {} is accepted", Self::MAX_EXPECTED_VERSION),
            ));
        }
        Ok(expected + 1)
    }

    /// The largest `expected` a save accepts (`i64::MAX - 1`).
    pub const MAX_EXPECTED_VERSION: StateVersion = i64::MAX as StateVersion - 1;
}
