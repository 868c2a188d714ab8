//! Thread summaries ([`Summary`]): incremental, versioned, never altering a
//! message.

use serde::Serialize;

use crate::{ThreadId, Timestamp};

/// A thread's summary as of one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The thread.
    pub thread_id: ThreadId,
    /// 1, 2, 3… per thread; each new summary folds newer messages into the
    /// previous one.
    pub version: u64,
    /// The summary text.
    pub text: String,
    /// The last message seq it covers: every message of the thread with a
    /// seq up to this one is folded in (deleted ones included as they were).
    pub covers_through: i64,
    /// How many messages it has folded in so far, over all versions.
    pub covered_messages: u64,
    /// Who wrote it (`local:extractive`, `openai:<model>`…).
    pub summarizer: String,
    /// When it was stored.
    pub created_at: Timestamp,
}

/// The next version of a summary, as a summariser produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSummary {
    /// The summary text (at most [`Summary::MAX_BYTES`]).
    pub text: String,
    /// The last message seq it covers (not below the previous version's).
    pub covers_through: i64,
    /// How many messages it folded in beyond the previous version.
    pub newly_covered: u64,
    /// Who wrote it.
    pub summarizer: String,
}

impl Summary {
    /// Largest accepted summary text, in bytes.
    pub const MAX_BYTES: usize = 64 * 1024;
}
