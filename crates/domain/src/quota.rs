//! Storage quotas per tenant: what a tenant may store ([`Quota`]: live
//! threads, live messages and their bytes) and what it stores ([`Usage`]).
//!
//! The byte measure is [`crate::Message::approx_bytes`], the measure of
//! response budgets: a message counts what it takes in a response (its
//! content, tool fields, tool calls and metadata as compact JSON, plus
//! [`crate::MESSAGE_OVERHEAD_BYTES`]). A thread marked deleted stops counting
//! at once, with its messages, before its rows are swept.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One dimension of a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaKind {
    /// Live threads.
    Threads,
    /// Live messages (of live threads).
    Messages,
    /// The [`crate::Message::approx_bytes`] of live messages.
    Bytes,
}

impl QuotaKind {
    /// Every dimension, in order.
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Threads, QuotaKind::Messages, QuotaKind::Bytes];

    /// The name in configuration keys, settings and errors.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Threads => "threads",
            QuotaKind::Messages => "messages",
            QuotaKind::Bytes => "bytes",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most a tenant may store; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Most live threads.
    pub threads: Option<u64>,
    /// Most live messages.
    pub messages: Option<u64>,
    /// Most bytes of live messages.
    pub bytes: Option<u64>,
}

impl Quota {
    /// No limit on anything.
    pub const UNLIMITED: Quota = Quota { threads: None, messages: None, bytes: None };

    /// The limit of `kind`, `None` when unlimited.
    #[must_use]
    pub const fn limit(&self, kind: QuotaKind) -> Option<u64> {
        match kind {
            QuotaKind::Threads => self.threads,
            QuotaKind::Messages => self.messages,
            QuotaKind::Bytes => self.bytes,
        }
    }

    /// Whether any dimension is limited.
    #[must_use]
    pub const fn is_limited(&self) -> bool {
        self.threads.is_some() || self.messages.is_some() || self.bytes.is_some()
    }

    /// The first dimension whose limit `delta` alone passes (a request that
    /// could never be stored, whatever is deleted first), with its limit.
    #[must_use]
    pub fn too_large(&self, delta: &Usage) -> Option<(QuotaKind, u64)> {
        QuotaKind::ALL.into_iter().find_map(|kind| match self.limit(kind) {
            Some(limit) if delta.get(kind) > limit => Some((kind, limit)),
            _ => None,
        })
    }
}

/// What a tenant stores, or what one write adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Live threads.
    pub threads: u64,
    /// Live messages.
    pub messages: u64,
    /// Bytes of live messages ([`crate::Message::approx_bytes`]).
    pub bytes: u64,
}

impl Usage {
    /// The count of `kind`.
    #[must_use]
    pub const fn get(&self, kind: QuotaKind) -> u64 {
        match kind {
            QuotaKind::Threads => self.threads,
            QuotaKind::Messages => self.messages,
            QuotaKind::Bytes => self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_larger_than_a_limit_is_named() {
        let quota = Quota { threads: None, messages: Some(10), bytes: Some(1_000) };
        assert_eq!(quota.too_large(&Usage { threads: 5, messages: 10, bytes: 1_000 }), None);
        assert_eq!(quota.too_large(&Usage { threads: 0, messages: 11, bytes: 2_000 }), Some((QuotaKind::Messages, 10)));
        assert_eq!(quota.too_large(&Usage { threads: 0, messages: 1, bytes: 1_001 }), Some((QuotaKind::Bytes, 1_000)));
        assert!(!Quota::UNLIMITED.is_limited() && quota.is_limited());
    }

    #[test]
    fn a_quota_reads_as_its_configuration() {
        let quota: Quota = serde_json::from_str(r#"{"messages": 5}"#).unwrap();
        assert_eq!(quota, Quota { messages: Some(5), ..Quota::UNLIMITED });
        assert!(serde_json::from_str::<Quota>(r#"{"messages": -1}"#).is_err());
        assert!(serde_json::from_str::<Quota>(r#"{"message": 5}"#).is_err());
    }
}
