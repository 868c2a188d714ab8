//! Traces derived from their spans: a [`TraceSummary`] per trace, what a
//! batch of spans adds to it ([`TraceSummary::from_spans`]) and how that
//! folds into what is stored ([`TraceSummary::merge`], which the stores'
//! upsert spells in SQL); the listing ([`TraceQuery`] with its keyset
//! [`TraceCursor`]); and a trace's spans as a tree ([`span_tree`]).
//!
//! Rules of a summary:
//! - `start_ns`/`end_ns` span all its spans; `span_count` and
//!   `error_count` count them (an error: status error or `error.type`);
//! - its root is the first root span (no parent) stored; `name`, `service`
//!   and `root_status` are the root's, or, while no root is stored, those
//!   of its earliest span;
//! - `status` is `error` when any span failed, else the root's status;
//! - `model` is the first model call's model stored, `agent` the first
//!   `gen_ai.agent.name` stored (within a batch: the root's, else the
//!   earliest span's); `input_tokens`/`output_tokens` sum its model calls'.

use std::collections::HashMap;

use super::{NewSpan, SpanId, StatusCode, TraceId};
use crate::DomainError;
use crate::seal::{fnv1a, seal, unseal};

/// A trace's status: `error` when any span failed, else its root's.
pub type TraceStatus = StatusCode;

/// A span as stored and read back.
pub type StoredSpan = NewSpan;

/// Longest text filter, in characters.
pub const MAX_TRACE_TEXT: usize = 256;

/// Most traces one page of a listing with a filter no index serves (the
/// text, the service, a status other than `error`) looks into: a page holds
/// the matches among them, fewer than its limit or none, with a cursor that
/// continues after the last trace looked at.
pub const MAX_TEXT_SCAN_TRACES: u32 = 1_000;

/// A trace, derived from its spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    /// Its id.
    pub trace_id: TraceId,
    /// Its root's name, else its earliest span's.
    pub name: String,
    /// Its root span, once stored.
    pub root_span_id: Option<SpanId>,
    /// Its root's (else earliest span's) resource `service.name`.
    pub service: Option<String>,
    /// The earliest start of its spans (ns).
    pub start_ns: i64,
    /// The latest end of its spans (ns).
    pub end_ns: i64,
    /// Its spans.
    pub span_count: i64,
    /// Its spans that failed.
    pub error_count: i64,
    /// `error` when `error_count > 0`, else `root_status`.
    pub status: TraceStatus,
    /// The root's status (`unset` without a root).
    pub root_status: StatusCode,
    /// The first model call's model.
    pub model: Option<String>,
    /// The first `gen_ai.agent.name`.
    pub agent: Option<String>,
    /// Input tokens of its model calls.
    pub input_tokens: i64,
    /// Output tokens of its model calls.
    pub output_tokens: i64,
}

impl TraceSummary {
    /// `end_ns - start_ns`.
    #[must_use]
    pub fn duration_ns(&self) -> i64 {
        self.end_ns - self.start_ns
    }

    /// What `spans` (of one trace, non-empty) say about their trace.
    #[must_use]
    pub fn from_spans(spans: &[&NewSpan]) -> Option<Self> {
        let earliest = spans.iter().min_by_key(|s| (s.start_ns, s.span_id))?;
        let root = spans.iter().filter(|s| s.parent_span_id.is_none()).min_by_key(|s| (s.start_ns, s.span_id));
        let head = root.unwrap_or(earliest);
        let mut by_start: Vec<&&NewSpan> = spans.iter().collect();
        by_start.sort_by_key(|s| (s.start_ns, s.span_id));
        let error_count = i64::try_from(spans.iter().filter(|s| s.is_error()).count()).unwrap_or(i64::MAX);
        let root_status = root.map_or(StatusCode::Unset, |r| r.status.code);
        let calls = spans.iter().filter_map(|s| s.gen_ai.as_ref().filter(|g| g.is_model_call()));
        let (input_tokens, output_tokens) = calls.fold((0_i64, 0_i64), |(i, o), g| {
            (i.saturating_add(g.input_tokens.unwrap_or(0)), o.saturating_add(g.output_tokens.unwrap_or(0)))
        });
        Some(Self {
            trace_id: head.trace_id,
            name: head.name.clone(),
            root_span_id: root.map(|r| r.span_id),
            service: head.service().map(|s| crate::replace_nul(s.to_owned())),
            start_ns: earliest.start_ns,
            end_ns: spans.iter().map(|s| s.end_ns).max().unwrap_or(earliest.end_ns),
            span_count: i64::try_from(spans.len()).unwrap_or(i64::MAX),
            error_count,
            status: if error_count > 0 { StatusCode::Error } else { root_status },
            root_status,
            model: by_start.iter().find_map(|s| s.model()).map(str::to_owned),
            agent: root.and_then(|r| r.agent()).or_else(|| by_start.iter().find_map(|s| s.agent())).map(str::to_owned),
            input_tokens,
            output_tokens,
        })
    }

    /// The summaries of every trace in `spans`, in order of first appearance.
    #[must_use]
    pub fn of_batch(spans: &[NewSpan]) -> Vec<Self> {
        let mut order: Vec<TraceId> = Vec::new();
        let mut groups: HashMap<TraceId, Vec<&NewSpan>> = HashMap::new();
        for s in spans {
            groups
                .entry(s.trace_id)
                .or_insert_with(|| {
                    order.push(s.trace_id);
                    Vec::new()
                })
                .push(s);
        }
        order.iter().filter_map(|t| groups.get(t).and_then(|g| Self::from_spans(g))).collect()
    }

    /// `self` (stored) with `newer` (a later batch of the same trace)
    /// folded in; the stores' upsert computes exactly this.
    #[must_use]
    pub fn merge(&self, newer: &Self) -> Self {
        // Root-derived fields: the stored root's, else the new root's, else
        // the earlier of the two heads'.
        let new_head = match (self.root_span_id, newer.root_span_id) {
            (Some(_), _) => false,
            (None, Some(_)) => true,
            (None, None) => newer.start_ns < self.start_ns,
        };
        let head = if new_head { newer } else { self };
        let error_count = self.error_count.saturating_add(newer.error_count);
        Self {
            trace_id: self.trace_id,
            name: head.name.clone(),
            root_span_id: self.root_span_id.or(newer.root_span_id),
            service: head.service.clone(),
            start_ns: self.start_ns.min(newer.start_ns),
            end_ns: self.end_ns.max(newer.end_ns),
            span_count: self.span_count.saturating_add(newer.span_count),
            error_count,
            status: if error_count > 0 { StatusCode::Error } else { head.root_status },
            root_status: head.root_status,
            model: self.model.clone().or_else(|| newer.model.clone()),
            agent: self.agent.clone().or_else(|| newer.agent.clone()),
            input_tokens: self.input_tokens.saturating_add(newer.input_tokens),
            output_tokens: self.output_tokens.saturating_add(newer.output_tokens),
        }
    }
}

/// A trace with its spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceDetail {
    /// The summary.
    pub summary: TraceSummary,
    /// Its spans, earliest first, at most the limit asked.
    pub spans: Vec<StoredSpan>,
    /// It has more spans than returned.
    pub truncated: bool,
}

/// The order of a trace listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceSort {
    /// Newest start first (`-start_time`).
    #[default]
    StartDesc,
    /// Oldest start first (`start_time`).
    StartAsc,
    /// Longest first (`-duration`).
    DurationDesc,
    /// Shortest first (`duration`).
    DurationAsc,
}

impl TraceSort {
    /// Every order.
    pub const ALL: [Self; 4] = [Self::StartDesc, Self::StartAsc, Self::DurationDesc, Self::DurationAsc];

    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartDesc => "-start_time",
            Self::StartAsc => "start_time",
            Self::DurationDesc => "-duration",
            Self::DurationAsc => "duration",
        }
    }

    /// Parses [`TraceSort::as_str`].
    ///
    /// # Errors
    /// A [`DomainError`] on `sort`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            DomainError::new("sort", "must be `-start_time` (default), `start_time`, `-duration` or `duration`")
        })
    }

    /// Whether the order is descending.
    #[must_use]
    pub fn descending(self) -> bool {
        matches!(self, Self::StartDesc | Self::DurationDesc)
    }

    /// Whether it orders by duration (else by start).
    #[must_use]
    pub fn by_duration(self) -> bool {
        matches!(self, Self::DurationDesc | Self::DurationAsc)
    }

    /// The sort key of `t`.
    #[must_use]
    pub fn key(self, t: &TraceSummary) -> i64 {
        if self.by_duration() { t.duration_ns() } else { t.start_ns }
    }
}

/// A trace listing: filters, order, page size and where it resumes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceQuery {
    /// Traces starting at or after (ns).
    pub from_ns: Option<i64>,
    /// Traces starting before (ns).
    pub to_ns: Option<i64>,
    /// The trace's model, exactly.
    pub model: Option<String>,
    /// The trace's agent, exactly.
    pub agent: Option<String>,
    /// The trace's service, exactly.
    pub service: Option<String>,
    /// The trace's status.
    pub status: Option<TraceStatus>,
    /// At least this long (ns).
    pub min_duration_ns: Option<i64>,
    /// A case-sensitive substring of a span's name or attributes' JSON.
    pub text: Option<String>,
    /// The order.
    pub sort: TraceSort,
    /// Most traces returned (1–1000).
    pub limit: u32,
    /// Resume after this key and id (from a cursor).
    pub after: Option<(i64, TraceId)>,
}

/// Where a trace listing resumes: the last sort key and id, bound to the
/// listing's filters and order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCursor {
    listing: u64,
    key: i64,
    trace_id: TraceId,
}

const TRACE_CURSOR_VERSION: u8 = 0x71;

impl TraceQuery {
    /// A fingerprint of the filters and order (not the page size or position).
    #[must_use]
    pub fn listing(&self) -> u64 {
        let mut b = Vec::new();
        let mut put = |tag: u8, v: Option<&[u8]>| {
            b.push(tag);
            if let Some(v) = v {
                b.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                b.extend_from_slice(v);
            }
        };
        put(1, self.from_ns.map(i64::to_be_bytes).as_ref().map(|a| &a[..]));
        put(2, self.to_ns.map(i64::to_be_bytes).as_ref().map(|a| &a[..]));
        put(3, self.model.as_deref().map(str::as_bytes));
        put(4, self.agent.as_deref().map(str::as_bytes));
        put(5, self.service.as_deref().map(str::as_bytes));
        put(6, self.status.map(|s| s.as_str().as_bytes()));
        put(7, self.min_duration_ns.map(i64::to_be_bytes).as_ref().map(|a| &a[..]));
        put(8, self.text.as_deref().map(str::as_bytes));
        put(9, Some(self.sort.as_str().as_bytes()));
        fnv1a(&b)
    }

    /// Checks the filters.
    ///
    /// # Errors
    /// A [`DomainError`] naming the field.
    pub fn validate(&self) -> Result<(), DomainError> {
        if !(1..=1000).contains(&self.limit) {
            return Err(DomainError::new("limit", "must be between 1 and 1000"));
        }
        if let (Some(f), Some(t)) = (self.from_ns, self.to_ns)
            && f >= t
        {
            return Err(DomainError::new("from", "must be before `to`"));
        }
        if self.min_duration_ns.is_some_and(|d| d < 0) {
            return Err(DomainError::new("min_duration_ms", "must not be negative"));
        }
        for (field, v) in
            [("q", &self.text), ("model", &self.model), ("agent", &self.agent), ("service", &self.service)]
        {
            let Some(v) = v else { continue };
            let n = v.chars().count();
            if n == 0 || n > MAX_TRACE_TEXT || v.contains('\0') {
                return Err(DomainError::new(field, format!("must be 1 to {MAX_TRACE_TEXT} characters, without NUL")));
            }
        }
        Ok(())
    }

    /// The cursor that resumes after `last`.
    #[must_use]
    pub fn cursor_after(&self, last: &TraceSummary) -> TraceCursor {
        self.cursor_at(self.sort.key(last), last.trace_id)
    }

    /// The cursor that resumes after the trace `id` whose sort key is `key`.
    #[must_use]
    pub fn cursor_at(&self, key: i64, id: TraceId) -> TraceCursor {
        TraceCursor { listing: self.listing(), key, trace_id: id }
    }

    /// Resumes after `cursor`'s position.
    ///
    /// # Errors
    /// A [`DomainError`] on `cursor` when it was issued for other filters
    /// or another order.
    pub fn resume(mut self, cursor: &TraceCursor) -> Result<Self, DomainError> {
        if cursor.listing != self.listing() {
            return Err(DomainError::new(
                "cursor",
                "was issued for other filters or another sort; start again without it",
            ));
        }
        self.after = Some((cursor.key, cursor.trace_id));
        Ok(self)
    }
}

impl TraceCursor {
    /// The text form.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut b = vec![TRACE_CURSOR_VERSION];
        b.extend_from_slice(&self.listing.to_be_bytes());
        b.extend_from_slice(&self.key.to_be_bytes());
        b.extend_from_slice(self.trace_id.as_bytes());
        seal(b)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// A [`DomainError`] on `cursor` for anything [`TraceCursor::encode`]
    /// did not produce.
    pub fn decode(s: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::new("cursor", "is not a cursor of this listing");
        let b = unseal(s).ok_or_else(bad)?;
        if b.len() != 33 || b[0] != TRACE_CURSOR_VERSION {
            return Err(bad());
        }
        let listing = u64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?);
        let key = i64::from_be_bytes(b[9..17].try_into().map_err(|_| bad())?);
        let trace_id = TraceId::from_bytes("cursor", &b[17..33]).map_err(|_| bad())?;
        Ok(Self { listing, key, trace_id })
    }
}

/// A span's place in its trace's tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeNode {
    /// Index into the spans given.
    pub index: usize,
    /// 0 for a root or an orphan, else its parent's plus one.
    pub depth: u32,
    /// It names a parent that is not among the spans.
    pub orphan: bool,
}

/// `spans` as a tree flattened depth first: roots (no parent) and orphans
/// (a parent not among them) at depth 0, each followed by its children,
/// siblings by start then span id. Every span appears once; spans whose
/// parents form a cycle (malformed input) come last as orphans.
#[must_use]
pub fn span_tree(spans: &[StoredSpan]) -> Vec<TreeNode> {
    let by_id: HashMap<SpanId, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id, i)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut tops = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| by_id.get(&p).copied()) {
            Some(p) if p != i => children.entry(p).or_default().push(i),
            _ => tops.push(i),
        }
    }
    let order = |v: &mut Vec<usize>| v.sort_by_key(|&i| (spans[i].start_ns, spans[i].span_id));
    order(&mut tops);
    for v in children.values_mut() {
        order(v);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let visit = |top: usize, out: &mut Vec<TreeNode>, seen: &mut Vec<bool>| {
        let mut stack = vec![(top, 0_u32)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let orphan = depth == 0 && spans[i].parent_span_id.is_some();
            out.push(TreeNode { index: i, depth, orphan });
            if let Some(c) = children.get(&i) {
                stack.extend(c.iter().rev().map(|&c| (c, depth + 1)));
            }
        }
    };
    for top in tops {
        visit(top, &mut out, &mut seen);
    }
    // Cycles: no member is a top; start from the earliest unvisited.
    let mut rest: Vec<usize> = (0..spans.len()).filter(|&i| !seen[i]).collect();
    order(&mut rest);
    for i in rest {
        visit(i, &mut out, &mut seen);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use std::sync::Arc;

    use super::*;
    use crate::observability::{Attributes, SpanInput, SpanLimits};
    use proptest::prelude::*;
    use serde_json::json;

    fn span(trace: u8, id: u8, parent: Option<u8>, start: i64, end: i64, error: bool, model: Option<&str>) -> NewSpan {
        let mut attributes = vec![];
        if let Some(m) = model {
            attributes.push(("gen_ai.request.model".to_owned(), json!(m)));
            attributes.push(("gen_ai.usage.input_tokens".to_owned(), json!(10)));
            attributes.push(("gen_ai.usage.output_tokens".to_owned(), json!(3)));
        }
        let resource = Arc::new(Attributes::from_iter([("service.name".to_owned(), json!(format!("svc{id}")))]));
        SpanInput {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("span {id}"),
            start_time_unix_nano: u64::try_from(start).unwrap(),
            end_time_unix_nano: u64::try_from(end).unwrap(),
            status_code: if error { 2 } else { 1 },
            attributes,
            ..SpanInput::default()
        }
        .accept(&resource, None, &SpanLimits::default())
        .unwrap()
    }

    #[test]
    fn a_batch_summarises_each_trace_from_its_root() {
        let spans = vec![
            span(1, 2, Some(1), 20, 40, false, Some("gpt-4o")),
            span(2, 9, Some(8), 5, 6, true, None),
            span(1, 1, None, 10, 50, false, None),
            span(1, 3, Some(1), 30, 60, true, Some("claude")),
        ];
        let all = TraceSummary::of_batch(&spans);
        assert_eq!(all.len(), 2);
        let t = &all[0];
        assert_eq!((t.name.as_str(), t.root_span_id.map(|s| s.to_hex())), ("span 1", Some("01".repeat(8))));
        assert_eq!((t.start_ns, t.end_ns, t.span_count, t.error_count), (10, 60, 3, 1));
        assert_eq!((t.status, t.root_status), (StatusCode::Error, StatusCode::Ok));
        assert_eq!(t.model.as_deref(), Some("gpt-4o"), "the earliest model call's");
        assert_eq!((t.input_tokens, t.output_tokens), (20, 6));
        assert_eq!(t.service.as_deref(), Some("svc1"));
        let o = &all[1];
        assert_eq!((o.name.as_str(), o.root_span_id, o.status), ("span 9", None, StatusCode::Error));
    }

    #[test]
    fn a_late_root_takes_over_name_and_status() {
        let early = TraceSummary::from_spans(&[&span(1, 2, Some(1), 20, 40, false, None)]).unwrap();
        let root = TraceSummary::from_spans(&[&span(1, 1, None, 30, 50, false, None)]).unwrap();
        let m = early.merge(&root);
        assert_eq!((m.name.as_str(), m.root_span_id, m.status), ("span 1", root.root_span_id, StatusCode::Ok));
        assert_eq!((m.start_ns, m.end_ns, m.span_count), (20, 50, 2));
        let back = root.merge(&early);
        assert_eq!((back.name.as_str(), back.status), ("span 1", StatusCode::Ok));
    }

    #[test]
    fn a_tree_puts_children_under_parents_and_marks_orphans() {
        let spans = vec![
            span(1, 3, Some(1), 30, 31, false, None),
            span(1, 1, None, 10, 50, false, None),
            span(1, 2, Some(1), 20, 21, false, None),
            span(1, 4, Some(9), 5, 6, false, None),
            span(1, 5, Some(2), 22, 23, false, None),
        ];
        let tree = span_tree(&spans);
        let ids: Vec<_> = tree.iter().map(|n| (spans[n.index].span_id.as_bytes()[0], n.depth, n.orphan)).collect();
        assert_eq!(ids, [(4, 0, true), (1, 0, false), (2, 1, false), (5, 2, false), (3, 1, false)]);
    }

    #[test]
    fn sorts_and_cursors_round_trip_and_bind_their_listing() {
        let q = TraceQuery { model: Some("gpt-4o".into()), limit: 10, ..TraceQuery::default() };
        let t = TraceSummary::from_spans(&[&span(1, 1, None, 10, 50, false, None)]).unwrap();
        let c = TraceCursor::decode(&q.cursor_after(&t).encode()).unwrap();
        assert_eq!(q.clone().resume(&c).unwrap().after, Some((10, t.trace_id)));
        let other = TraceQuery { model: Some("x".into()), ..q.clone() };
        assert_eq!(other.resume(&c).unwrap_err().field, "cursor");
        let by_duration = TraceQuery { sort: TraceSort::DurationDesc, ..q.clone() };
        assert_eq!(by_duration.cursor_after(&t).key, 40);
        assert!(TraceCursor::decode("AAAA").is_err());
        for s in TraceSort::ALL {
            assert_eq!(TraceSort::parse(s.as_str()).unwrap(), s);
        }
        assert_eq!(TraceSort::parse("name").unwrap_err().field, "sort");
        assert_eq!(TraceQuery { limit: 0, ..q.clone() }.validate().unwrap_err().field, "limit");
        let bad_range = TraceQuery { from_ns: Some(5), to_ns: Some(5), ..q.clone() };
        assert_eq!(bad_range.validate().unwrap_err().field, "from");
        assert_eq!(TraceQuery { text: Some(String::new()), ..q }.validate().unwrap_err().field, "q");
    }

    proptest! {
        /// However a trace's spans arrive in batches, the stored summary's
        /// counts, range, tokens and status are those of the whole.
        #[test]
        fn merging_batches_in_any_order_is_the_whole(
            raw in proptest::collection::vec((0_i64..1000, 0_i64..500, any::<bool>(), any::<bool>()), 1..30),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            root_at in any::<prop::sample::Index>(),
        ) {
            let root = root_at.index(raw.len());
            let spans: Vec<NewSpan> = raw.iter().enumerate().map(|(i, &(start, len, error, model))| {
                let id = u8::try_from(i + 1).unwrap();
                let parent = if i == root { None } else { Some(u8::try_from(root + 1).unwrap()) };
                span(1, id, parent, start + 1, start + 1 + len, error, model.then_some("m"))
            }).collect();
            let whole = TraceSummary::of_batch(&spans).remove(0);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(spans.len())).collect();
            at.push(0);
            at.push(spans.len());
            at.sort_unstable();
            at.dedup();
            let batches: Vec<TraceSummary> = at.windows(2)
                .filter_map(|w| TraceSummary::of_batch(&spans[w[0]..w[1]]).into_iter().next())
                .collect();
            for order in [batches.clone(), batches.iter().rev().cloned().collect()] {
                let merged = order.iter().skip(1).fold(order[0].clone(), |acc, b| acc.merge(b));
                prop_assert_eq!(merged.span_count, whole.span_count);
                prop_assert_eq!(merged.error_count, whole.error_count);
                prop_assert_eq!((merged.start_ns, merged.end_ns), (whole.start_ns, whole.end_ns));
                prop_assert_eq!((merged.input_tokens, merged.output_tokens), (whole.input_tokens, whole.output_tokens));
                prop_assert_eq!(merged.status, whole.status);
                prop_assert_eq!(&merged.name, &whole.name, "one root: its name whatever the order");
                prop_assert_eq!(merged.root_span_id, whole.root_span_id);
            }
        }

        #[test]
        fn every_span_appears_once_after_its_parent(
            parents in proptest::collection::vec(proptest::option::of(0_usize..40), 1..40),
            starts in proptest::collection::vec(0_i64..100, 40),
        ) {
            let spans: Vec<NewSpan> = parents.iter().enumerate().map(|(i, p)| {
                let id = u8::try_from(i + 1).unwrap();
                let parent = p.map(|p| u8::try_from(p + 1).unwrap());
                span(1, id, parent, starts[i] + 1, starts[i] + 2, false, None)
            }).collect();
            let tree = span_tree(&spans);
            prop_assert_eq!(tree.len(), spans.len());
            let mut pos = vec![usize::MAX; spans.len()];
            for (k, n) in tree.iter().enumerate() {
                prop_assert_eq!(pos[n.index], usize::MAX, "a span twice");
                pos[n.index] = k;
            }
            for n in &tree {
                if n.depth > 0 {
                    let parent = spans[n.index].parent_span_id.unwrap();
                    let p = spans.iter().position(|s| s.span_id == parent).unwrap();
                    prop_assert!(pos[p] < pos[n.index]);
                    prop_assert_eq!(tree[pos[p]].depth + 1, n.depth);
                }
            }
        }
    }
}
