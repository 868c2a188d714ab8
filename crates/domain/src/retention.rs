//! Retention (issue 14): a tenant's policies saying what memory may be
//! deleted, and the receipts ([`RetentionRun`]) of what retention runs and
//! erasures of a resource deleted.
//!
//! A policy applies to the tenant's threads, or only to those of one agent
//! and/or one resource; an agent or resource that does not exist yet is
//! allowed (the policy applies once one appears). Its rules, each optional
//! but at least one present, every number at least 1:
//! - `max_thread_age_secs`: a thread whose last activity (`updated_at`,
//!   bumped by every append and patch) is older is deleted whole;
//! - `max_message_age_secs`: messages created longer ago are deleted;
//! - `max_messages_per_thread`: a thread keeps its newest N messages, the
//!   older are deleted oldest first; with `only_summarized`, only those a
//!   summary already covers (`seq <= covers_through` of its newest summary);
//! - `max_threads_per_resource`: a resource keeps its N most recently
//!   active threads, the others are deleted least recently active first.
//!
//! A thread whose metadata holds `"pinned": true` ([`PINNED_KEY`]) is exempt
//! from every rule (and is not counted by `max_threads_per_resource`).
//! Erasure of a resource ignores pins.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AgentName, DomainError, PolicyId, ResourceId, RunId, TenantId, Timestamp};

/// The thread metadata key that exempts a thread from retention when it
/// holds JSON `true`.
pub const PINNED_KEY: &str = "pinned";

/// Most policies one tenant may hold.
pub const MAX_POLICIES: usize = 100;

/// Longest age a rule may name: 100 years, in seconds (so `now - age` never
/// leaves the range of a timestamp).
pub const MAX_RETENTION_SECS: i64 = 100 * 366 * 24 * 3600;

/// The rules of a policy; `None` is "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetentionRules {
    /// Threads idle longer than this many seconds are deleted.
    pub max_thread_age_secs: Option<i64>,
    /// Messages older than this many seconds are deleted.
    pub max_message_age_secs: Option<i64>,
    /// A thread keeps at most this many messages (the newest).
    pub max_messages_per_thread: Option<i64>,
    /// With `max_messages_per_thread`: only messages a summary covers go.
    pub only_summarized: bool,
    /// A resource keeps at most this many threads (the most recently active).
    pub max_threads_per_resource: Option<i64>,
}

/// One rule of a policy, applied on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionRule {
    /// `max_thread_age_secs`.
    ThreadAge,
    /// `max_message_age_secs`.
    MessageAge,
    /// `max_messages_per_thread`.
    MessagesPerThread,
    /// `max_threads_per_resource`.
    ThreadsPerResource,
}

impl RetentionRule {
    /// Every rule, in the order a run applies them (whole threads first, so
    /// message rules do not work on threads about to go).
    pub const ALL: [Self; 4] = [Self::ThreadAge, Self::ThreadsPerResource, Self::MessageAge, Self::MessagesPerThread];

    /// The rule's field name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ThreadAge => "max_thread_age_secs",
            Self::MessageAge => "max_message_age_secs",
            Self::MessagesPerThread => "max_messages_per_thread",
            Self::ThreadsPerResource => "max_threads_per_resource",
        }
    }

    /// Whether the rule deletes whole threads (else messages).
    #[must_use]
    pub fn deletes_threads(self) -> bool {
        matches!(self, Self::ThreadAge | Self::ThreadsPerResource)
    }
}

impl RetentionRules {
    /// The limit of `rule`, if the policy sets it.
    #[must_use]
    pub fn limit(&self, rule: RetentionRule) -> Option<i64> {
        match rule {
            RetentionRule::ThreadAge => self.max_thread_age_secs,
            RetentionRule::MessageAge => self.max_message_age_secs,
            RetentionRule::MessagesPerThread => self.max_messages_per_thread,
            RetentionRule::ThreadsPerResource => self.max_threads_per_resource,
        }
    }

    /// Checks every rule.
    ///
    /// # Errors
    /// A [`DomainError`] naming the field: a number below 1, an age over
    /// [`MAX_RETENTION_SECS`], `only_summarized` without
    /// `max_messages_per_thread`, or no rule at all (`rules`).
    pub fn validate(&self) -> Result<(), DomainError> {
        for rule in RetentionRule::ALL {
            if let Some(v) = self.limit(rule) {
                if v < 1 {
                    return Err(DomainError::new(rule.name(), format!("must be at least 1, got {v}")));
                }
                if v > MAX_RETENTION_SECS {
                    return Err(DomainError::new(rule.name(), format!("must be at most {MAX_RETENTION_SECS}")));
                }
            }
        }
        if self.only_summarized && self.max_messages_per_thread.is_none() {
            return Err(DomainError::new("only_summarized", "applies only with max_messages_per_thread"));
        }
        if RetentionRule::ALL.iter().all(|r| self.limit(*r).is_none()) {
            return Err(DomainError::new(
                "rules",
                "name at least one of max_thread_age_secs, max_message_age_secs, max_messages_per_thread, \
                 max_threads_per_resource",
            ));
        }
        Ok(())
    }
}

/// A policy as created or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRetentionPolicy {
    /// Only threads of this agent (`None`: every agent's and none).
    pub agent_id: Option<AgentName>,
    /// Only threads of this resource (`None`: every resource's and none).
    pub resource_id: Option<ResourceId>,
    /// The rules.
    pub rules: RetentionRules,
}

impl NewRetentionPolicy {
    /// Checks the rules.
    ///
    /// # Errors
    /// As [`RetentionRules::validate`].
    pub fn validate(&self) -> Result<(), DomainError> {
        self.rules.validate()
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Its id.
    pub id: PolicyId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Only threads of this agent.
    pub agent_id: Option<AgentName>,
    /// Only threads of this resource.
    pub resource_id: Option<ResourceId>,
    /// The rules.
    pub rules: RetentionRules,
    /// Created.
    pub created_at: Timestamp,
    /// Last replaced.
    pub updated_at: Timestamp,
}

/// What a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A policy applied (by the scheduler or `memlayer prune`).
    Prune,
    /// A resource erased.
    Erase,
}

impl RunKind {
    /// Its stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prune => "prune",
            Self::Erase => "erase",
        }
    }

    /// The kind of a stored name.
    ///
    /// # Errors
    /// An unknown name.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s {
            "prune" => Ok(Self::Prune),
            "erase" => Ok(Self::Erase),
            other => Err(DomainError::new("kind", format!("unknown run kind {other:?}"))),
        }
    }
}

/// How many of each kind a run deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunCounts {
    /// Threads deleted whole (their messages, vectors, full-text entries,
    /// summaries, jobs, agent state and working memory go with them).
    pub threads: u64,
    /// Messages deleted: those of the deleted threads plus those deleted
    /// one by one.
    pub messages: u64,
    /// Summary versions deleted because every message they covered is gone.
    pub summaries: u64,
    /// `Idempotency-Key` records deleted because they held deleted data.
    pub idempotency_records: u64,
    /// Resource working-memory documents deleted (erasure).
    pub working_memory: u64,
    /// Workflows of the resource deleted with their steps and events
    /// (erasure; their steps' threads are the resource's threads).
    #[serde(default)]
    pub workflows: u64,
}

impl RunCounts {
    /// Adds `other` in.
    pub fn add(&mut self, other: &Self) {
        self.threads += other.threads;
        self.messages += other.messages;
        self.summaries += other.summaries;
        self.idempotency_records += other.idempotency_records;
        self.working_memory += other.working_memory;
        self.workflows += other.workflows;
    }
}

/// The first and last (UUIDv7, so time-ordered) id of what a run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// Smallest id.
    pub first: Uuid,
    /// Largest id.
    pub last: Uuid,
}

impl IdRange {
    /// Widens `range` to hold `id`.
    pub fn widen(range: &mut Option<Self>, id: Uuid) {
        match range {
            None => *range = Some(Self { first: id, last: id }),
            Some(r) => {
                r.first = r.first.min(id);
                r.last = r.last.max(id);
            }
        }
    }

    /// Widens `range` to hold `other`.
    pub fn merge(range: &mut Option<Self>, other: Option<Self>) {
        if let Some(o) = other {
            Self::widen(range, o.first);
            Self::widen(range, o.last);
        }
    }
}

/// A receipt: what one policy's run, or one erasure, deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    /// Its id.
    pub id: RunId,
    /// Its tenant.
    pub tenant: TenantId,
    /// A prune or an erasure.
    pub kind: RunKind,
    /// The policy applied (prune).
    pub policy_id: Option<PolicyId>,
    /// The resource erased (erase).
    pub resource_id: Option<ResourceId>,
    /// Nothing was deleted: the counts are what would have been.
    pub dry_run: bool,
    /// Started.
    pub started_at: Timestamp,
    /// Finished; `None` while an erasure is under way (or was cut short by
    /// a crash: it is resumed), and for a prune an error cut short (not
    /// resumed: the next run applies the policy again).
    pub finished_at: Option<Timestamp>,
    /// What was deleted.
    pub counts: RunCounts,
    /// The ids of the threads deleted.
    pub thread_ids: Option<IdRange>,
    /// The ids of the messages deleted one by one.
    pub message_ids: Option<IdRange>,
}

impl RetentionRun {
    /// A run starting now.
    #[must_use]
    pub fn start(tenant: TenantId, kind: RunKind, at: Timestamp) -> Self {
        Self {
            id: RunId::new(),
            tenant,
            kind,
            policy_id: None,
            resource_id: None,
            dry_run: false,
            started_at: at,
            finished_at: None,
            counts: RunCounts::default(),
            thread_ids: None,
            message_ids: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rules: RetentionRules, field: Option<&str>) {
        assert_eq!(rules.validate().err().map(|e| e.field), field, "{rules:?}");
    }

    #[test]
    fn rules_name_the_offending_field() {
        let ok = RetentionRules { max_thread_age_secs: Some(1), ..RetentionRules::default() };
        check(ok, None);
        check(RetentionRules::default(), Some("rules"));
        check(RetentionRules { max_thread_age_secs: Some(0), ..ok }, Some("max_thread_age_secs"));
        check(RetentionRules { max_message_age_secs: Some(-5), ..ok }, Some("max_message_age_secs"));
        check(RetentionRules { max_messages_per_thread: Some(0), ..ok }, Some("max_messages_per_thread"));
        check(RetentionRules { max_threads_per_resource: Some(-1), ..ok }, Some("max_threads_per_resource"));
        check(RetentionRules { max_thread_age_secs: Some(MAX_RETENTION_SECS + 1), ..ok }, Some("max_thread_age_secs"));
        check(RetentionRules { only_summarized: true, ..ok }, Some("only_summarized"));
        check(RetentionRules { only_summarized: true, max_messages_per_thread: Some(3), ..ok }, None);
    }

    #[test]
    fn ranges_widen() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(5), Uuid::from_u128(3));
        let mut r = None;
        for id in [c, b, a] {
            IdRange::widen(&mut r, id);
        }
        assert_eq!(r, Some(IdRange { first: a, last: b }));
        let mut other = None;
        IdRange::merge(&mut other, r);
        assert_eq!(other, r);
    }
}
