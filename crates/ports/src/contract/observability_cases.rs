//! Contract cases of [`crate::ObservabilityStore`]. Each `pub async fn`
//! here takes a fresh [`Backend`] and checks one group of "MUST" sentences
//! from the port docs. `contract_suite!` runs them for every backend;
//! adding a case means adding its name to the macro's observability list
//! (the completeness test fails otherwise).

use std::collections::BTreeSet;
use std::sync::Arc;

use memlayer_domain::observability::{
    Attributes, CostQuery, EvalQuery, EventInput, LinkInput, MetricName, MetricQuery, MetricSample, NewEvalExample,
    NewEvalRun, NewSpan, PerfQuery, Scope, Scores, SpanInput, SpanLimits, StatusCode, TraceQuery, TraceSort,
    TraceStatus, TraceSummary,
};
use memlayer_domain::{EvalRunId, NewMessage, Role, TenantId, TraceId, from_micros};
use proptest::prelude::*;
use serde_json::json;

use super::Backend;
use super::support::{assert_invalid, assert_not_found, run_prop, tenant, thread};
use crate::{MAX_INGEST_SPANS, ObservabilityStore};

/// Nanoseconds of a fixed instant (odd digits: no backend may round them).
const T0: i64 = 1_764_400_000_123_456_789;
const SEC: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SEC;

fn trace_id(n: u32) -> Vec<u8> {
    let mut b = vec![0xab; 16];
    b[12..].copy_from_slice(&n.to_be_bytes());
    b
}

fn tid(n: u32) -> TraceId {
    TraceId::from_bytes("t", &trace_id(n)).unwrap()
}

fn span_bytes(n: u32) -> Vec<u8> {
    let mut b = vec![0x5a; 8];
    b[4..].copy_from_slice(&n.to_be_bytes());
    b
}

/// A span of trace `trace`, id `id`, child of `parent`, at `T0 + start`
/// lasting `len` ns, with `attrs`, from a service named `svc`.
struct S {
    trace: u32,
    id: u32,
    parent: Option<u32>,
    start: i64,
    len: i64,
    attrs: Vec<(&'static str, serde_json::Value)>,
    error: bool,
}

impl S {
    fn new(trace: u32, id: u32, parent: Option<u32>, start: i64, len: i64) -> Self {
        Self { trace, id, parent, start, len, attrs: vec![], error: false }
    }

    fn attr(mut self, k: &'static str, v: serde_json::Value) -> Self {
        self.attrs.push((k, v));
        self
    }

    fn failed(mut self) -> Self {
        self.error = true;
        self
    }

    fn call(self, model: &str, agent: Option<&str>, input: i64, output: i64) -> Self {
        let s = self
            .attr("gen_ai.request.model", json!(model))
            .attr("gen_ai.operation.name", json!("chat"))
            .attr("gen_ai.usage.input_tokens", json!(input))
            .attr("gen_ai.usage.output_tokens", json!(output));
        match agent {
            Some(a) => s.attr("gen_ai.agent.name", json!(a)),
            None => s,
        }
    }

    fn build(self, svc: &str) -> NewSpan {
        let resource = Arc::new(Attributes::from_iter([("service.name".to_owned(), json!(svc))]));
        SpanInput {
            trace_id: trace_id(self.trace),
            span_id: span_bytes(self.id),
            parent_span_id: self.parent.map(span_bytes).unwrap_or_default(),
            name: format!("span {}", self.id),
            kind: 1,
            start_time_unix_nano: u64::try_from(T0 + self.start).unwrap(),
            end_time_unix_nano: u64::try_from(T0 + self.start + self.len).unwrap(),
            attributes: self.attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            status_code: if self.error { 2 } else { 1 },
            ..SpanInput::default()
        }
        .accept(&resource, None, &SpanLimits::default())
        .unwrap()
    }
}

fn query() -> TraceQuery {
    TraceQuery { limit: 1000, ..TraceQuery::default() }
}

async fn summary(b: &Backend, t: &TenantId, n: u32) -> TraceSummary {
    b.observability.trace(t, tid(n), 10_000).await.unwrap().summary
}

/// A span reads back as it was stored: ids, nanosecond times, kind,
/// status, attributes of every JSON type, resource, scope, events (in time
/// order, as sent among equal times) and links, and the counters.
pub async fn obs_ingest_round_trips_every_field(b: Backend) {
    let t = tenant("acme");
    let resource =
        Arc::new(Attributes::from_iter([("service.name".to_owned(), json!("bot")), ("host.id".to_owned(), json!(7))]));
    let scope = Arc::new(Scope { name: "lib".into(), version: "1.2".into() });
    let input = SpanInput {
        trace_id: trace_id(1),
        span_id: span_bytes(2),
        parent_span_id: vec![0xff; 8],
        trace_state: "k=v".into(),
        name: "chat gpt-4o — ünïcode".into(),
        kind: 3,
        start_time_unix_nano: u64::try_from(T0).unwrap(),
        end_time_unix_nano: u64::try_from(T0 + 1_500_000_001).unwrap(),
        attributes: vec![
            ("s".into(), json!("text")),
            ("b".into(), json!(true)),
            ("i".into(), json!(-9_007_199_254_740_993_i64)),
            ("f".into(), json!(0.25)),
            ("a".into(), json!([1, "two", null])),
            ("o".into(), json!({"k": {"n": 1}})),
            ("gen_ai.request.model".into(), json!("gpt-4o")),
            ("gen_ai.usage.input_tokens".into(), json!(12)),
            ("gen_ai.usage.output_tokens".into(), json!(40)),
            ("gen_ai.response.time_to_first_chunk".into(), json!(0.2)),
        ],
        dropped_attributes_count: 3,
        events: vec![
            EventInput {
                time_unix_nano: u64::try_from(T0 + 9).unwrap(),
                name: "later".into(),
                attributes: vec![("x".into(), json!(1))],
                dropped_attributes_count: 1,
            },
            EventInput { time_unix_nano: u64::try_from(T0 + 5).unwrap(), name: "sooner".into(), ..Default::default() },
            EventInput { time_unix_nano: u64::try_from(T0 + 5).unwrap(), name: "as soon".into(), ..Default::default() },
        ],
        dropped_events_count: 2,
        links: vec![LinkInput {
            trace_id: trace_id(9),
            span_id: span_bytes(9),
            trace_state: "a=b".into(),
            attributes: vec![("why".into(), json!("retry"))],
            dropped_attributes_count: 4,
        }],
        dropped_links_count: 5,
        status_code: 2,
        status_message: "rate limited".into(),
    };
    let sent = input.accept(&resource, Some(&scope), &SpanLimits::default()).unwrap();
    let report = b.observability.ingest(&t, vec![sent.clone()]).await.unwrap();
    assert_eq!((report.stored, report.duplicates), (1, 0));
    let detail = b.observability.trace(&t, tid(1), 100).await.unwrap();
    assert!(!detail.truncated);
    assert_eq!(detail.spans.len(), 1);
    let got = &detail.spans[0];
    let mut want = sent.clone();
    // Read back in time order, in the order sent among equal times.
    want.events = vec![sent.events[1].clone(), sent.events[2].clone(), sent.events[0].clone()];
    assert_eq!(got, &want, "every field of the span");
    let s = &detail.summary;
    assert_eq!((s.start_ns, s.end_ns, s.span_count, s.error_count), (T0, T0 + 1_500_000_001, 1, 1));
    assert_eq!((s.status, s.root_span_id), (StatusCode::Error, None), "an orphan is no root");
    assert_eq!((s.model.as_deref(), s.input_tokens, s.output_tokens), (Some("gpt-4o"), 12, 40));
    assert_eq!(s.service.as_deref(), Some("bot"));
}

/// A span sent again (alone, in a later batch, or twice in one batch) is
/// stored once and counted once in its trace; past the limit nothing is
/// stored.
pub async fn obs_ingest_is_idempotent_and_all_or_nothing(b: Backend) {
    let t = tenant("acme");
    let batch = vec![
        S::new(1, 1, None, 0, 100).call("m", None, 10, 1).build("svc"),
        S::new(1, 2, Some(1), 10, 20).failed().build("svc"),
    ];
    let first = b.observability.ingest(&t, batch.clone()).await.unwrap();
    assert_eq!((first.stored, first.duplicates), (2, 0));
    let before = summary(&b, &t, 1).await;
    let again = b.observability.ingest(&t, batch.clone()).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 2));
    let mut mixed = batch.clone();
    mixed.push(S::new(1, 3, Some(1), 30, 5).build("svc"));
    mixed.push(mixed[2].clone());
    let third = b.observability.ingest(&t, mixed).await.unwrap();
    assert_eq!((third.stored, third.duplicates), (1, 3));
    let after = summary(&b, &t, 1).await;
    assert_eq!((before.span_count, before.error_count, before.input_tokens), (2, 1, 10));
    assert_eq!((after.span_count, after.error_count, after.input_tokens), (3, 1, 10), "duplicates never count");
    let detail = b.observability.trace(&t, tid(1), 100).await.unwrap();
    assert_eq!(detail.spans.len(), 3);
    let too_many: Vec<NewSpan> = (0..=u32::try_from(MAX_INGEST_SPANS).unwrap())
        .map(|i| S::new(2, i + 1, None, i64::from(i), 1).build("svc"))
        .collect();
    assert_invalid(b.observability.ingest(&t, too_many).await, "past the limit");
    assert_not_found(b.observability.trace(&t, tid(2), 10).await, "nothing of a refused batch");
}

/// However a trace's spans are split into batches and in whatever order the
/// batches arrive, the stored summary is the domain's merge of them: a late
/// root takes over name and status, counts, range and tokens add up.
pub async fn obs_traces_merge_batches_as_the_domain_does(b: Backend) {
    let handle = tokio::runtime::Handle::current();
    let strategy = (
        proptest::collection::vec((0_i64..1000, 1_i64..500, any::<bool>(), any::<bool>()), 1..12),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    let case = std::sync::atomic::AtomicU32::new(0);
    run_prop(12, strategy, |(raw, cuts, root_at, reverse)| {
        handle.block_on(async {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let t = tenant("acme");
            let root = root_at.index(raw.len());
            let spans: Vec<NewSpan> = raw
                .iter()
                .enumerate()
                .map(|(i, &(start, len, error, model))| {
                    let id = u32::try_from(i + 1).unwrap();
                    let parent = (i != root).then(|| u32::try_from(root + 1).unwrap());
                    let s = S::new(n, id, parent, start, len);
                    let s = if error { s.failed() } else { s };
                    let s = if model { s.call("m", Some("ag"), 3, 2) } else { s };
                    s.build(&format!("svc{id}"))
                })
                .collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(spans.len())).collect();
            at.extend([0, spans.len()]);
            at.sort_unstable();
            at.dedup();
            let mut batches: Vec<&[NewSpan]> = at.windows(2).map(|w| &spans[w[0]..w[1]]).collect();
            if reverse {
                batches.reverse();
            }
            let mut expected: Option<TraceSummary> = None;
            for batch in batches {
                b.observability.ingest(&t, batch.to_vec()).await.unwrap();
                let delta = TraceSummary::of_batch(batch).remove(0);
                expected = Some(match expected {
                    Some(e) => e.merge(&delta),
                    None => delta,
                });
            }
            prop_assert_eq!(summary(&b, &t, n).await, expected.unwrap());
            Ok(())
        })
    });
}

/// Traces are the tenant's: the same trace id in two tenants is two traces,
/// another tenant's is `NotFound`, listings see only the tenant's.
pub async fn obs_traces_are_tenant_scoped(b: Backend) {
    let (a, z) = (tenant("acme"), tenant("zeta"));
    b.observability.ingest(&a, vec![S::new(1, 1, None, 0, 10).build("a")]).await.unwrap();
    b.observability.ingest(&z, vec![S::new(1, 1, None, 0, 99).build("z")]).await.unwrap();
    b.observability.ingest(&z, vec![S::new(2, 1, None, 0, 5).build("z")]).await.unwrap();
    assert_eq!(summary(&b, &a, 1).await.duration_ns(), 10);
    assert_eq!(summary(&b, &z, 1).await.duration_ns(), 99);
    assert_not_found(b.observability.trace(&a, tid(2), 10).await, "another tenant's trace");
    let listed = b.observability.list_traces(&a, &query()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].service.as_deref(), Some("a"));
    let calls = PerfQuery {
        from_ns: 0,
        to_ns: i64::MAX,
        bucket_ns: DAY,
        model: None,
        agent: None,
        operation: None,
        max_calls: 10,
    };
    assert!(b.observability.model_calls(&a, &calls).await.unwrap().calls.is_empty());
}

/// Every filter of the listing selects exactly its traces, and every order
/// pages through them without skipping or repeating one; a cursor of
/// another listing is refused.
pub async fn obs_trace_listing_filters_and_pages(b: Backend) {
    let t = tenant("acme");
    let mut spans = Vec::new();
    for i in 0..30_u32 {
        let start = i64::from(i) * SEC;
        let len = i64::from((i * 7) % 11 + 1) * 1_000_000;
        let mut root = S::new(i + 1, 1, None, start, len);
        if i % 3 == 0 {
            root = root.call(if i % 2 == 0 { "gpt-4o" } else { "claude" }, None, 5, 5);
        }
        if i % 5 == 0 {
            root = root.failed();
        }
        if i % 4 == 0 {
            root = root.attr("gen_ai.agent.name", json!("support"));
        }
        if i == 17 {
            root = root.attr("note", json!("needle in a haystack"));
        }
        spans.push(root.build(if i % 2 == 0 { "even" } else { "odd" }));
        spans.push(S::new(i + 1, 2, Some(1), start + 1, 1).build("child"));
    }
    b.observability.ingest(&t, spans.clone()).await.unwrap();
    let all: Vec<TraceSummary> = spans.chunks(2).map(|pair| TraceSummary::of_batch(pair).remove(0)).collect();
    let select = |f: &dyn Fn(&TraceSummary) -> bool| -> BTreeSet<TraceId> {
        all.iter().filter(|s| f(s)).map(|s| s.trace_id).collect()
    };
    let listed = |q: TraceQuery| {
        let b = b.clone();
        let t = t.clone();
        async move {
            let page = b.observability.list_traces(&t, &q).await.unwrap();
            assert!(page.next_cursor.is_none());
            page.items.iter().map(|s| s.trace_id).collect::<BTreeSet<_>>()
        }
    };
    let cases: Vec<(TraceQuery, BTreeSet<TraceId>)> = vec![
        (TraceQuery { model: Some("gpt-4o".into()), ..query() }, select(&|s| s.model.as_deref() == Some("gpt-4o"))),
        (TraceQuery { agent: Some("support".into()), ..query() }, select(&|s| s.agent.as_deref() == Some("support"))),
        (TraceQuery { service: Some("odd".into()), ..query() }, select(&|s| s.service.as_deref() == Some("odd"))),
        (TraceQuery { status: Some(TraceStatus::Error), ..query() }, select(&|s| s.status == StatusCode::Error)),
        (TraceQuery { status: Some(TraceStatus::Ok), ..query() }, select(&|s| s.status == StatusCode::Ok)),
        (TraceQuery { min_duration_ns: Some(6_000_000), ..query() }, select(&|s| s.duration_ns() >= 6_000_000)),
        (
            TraceQuery { from_ns: Some(T0 + 10 * SEC), to_ns: Some(T0 + 20 * SEC), ..query() },
            select(&|s| (T0 + 10 * SEC..T0 + 20 * SEC).contains(&s.start_ns)),
        ),
        (TraceQuery { text: Some("needle".into()), ..query() }, select(&|s| s.trace_id == tid(18))),
        (TraceQuery { text: Some("span 2".into()), ..query() }, select(&|_| true)),
        (TraceQuery { text: Some("Needle".into()), ..query() }, BTreeSet::new()),
        (
            TraceQuery { model: Some("gpt-4o".into()), status: Some(TraceStatus::Error), ..query() },
            select(&|s| s.model.as_deref() == Some("gpt-4o") && s.status == StatusCode::Error),
        ),
    ];
    for (q, want) in cases {
        assert!(!want.is_empty() || q.text.is_some(), "a case that selects something: {q:?}");
        assert_eq!(listed(q.clone()).await, want, "{q:?}");
    }
    for sort in TraceSort::ALL {
        for limit in [1, 4, 7] {
            let q = TraceQuery { sort, limit, ..query() };
            let mut got = Vec::new();
            let mut page = b.observability.list_traces(&t, &q).await.unwrap();
            loop {
                assert!(page.items.len() <= limit as usize);
                got.extend(page.items.iter().map(|s| (sort.key(s), s.trace_id)));
                let Some(c) = page.next_cursor else { break };
                page = b.observability.list_traces(&t, &q.clone().resume(&c).unwrap()).await.unwrap();
            }
            let mut want: Vec<(i64, TraceId)> = all.iter().map(|s| (sort.key(s), s.trace_id)).collect();
            want.sort_unstable();
            if sort.descending() {
                want.reverse();
            }
            assert_eq!(got, want, "{sort:?} by {limit}");
        }
    }
    let first = b.observability.list_traces(&t, &TraceQuery { limit: 2, ..query() }).await.unwrap();
    let cursor = first.next_cursor.unwrap();
    let other = TraceQuery { limit: 2, model: Some("x".into()), ..query() };
    assert!(other.resume(&cursor).is_err(), "a cursor is bound to its filters");
    assert_invalid(b.observability.list_traces(&t, &TraceQuery { limit: 0, ..query() }).await, "limit 0");
}

/// A filter no index serves (the text, the service, a status other than
/// `error`) looks into at most `MAX_TEXT_SCAN_TRACES` traces a page: a
/// match past them is found by following the cursor, never skipped, and no
/// page holds a trace twice. The status `error` is indexed: not windowed.
pub async fn obs_text_search_is_bounded_and_resumable(b: Backend) {
    use memlayer_domain::observability::MAX_TEXT_SCAN_TRACES;
    let t = tenant("acme");
    let n = MAX_TEXT_SCAN_TRACES + 300;
    let spans: Vec<NewSpan> = (1..=n)
        .map(|i| {
            let s = S::new(i, 1, None, i64::from(i) * SEC, 10);
            // The oldest trace and one in the first window are the only
            // ones with the needle, from service `rare`, and not failed.
            if i == 1 || i == n - 5 {
                s.attr("note", json!("a needle here")).build("rare")
            } else {
                s.failed().build("svc")
            }
        })
        .collect();
    for chunk in spans.chunks(500) {
        b.observability.ingest(&t, chunk.to_vec()).await.unwrap();
    }
    for q in [
        TraceQuery { text: Some("needle".into()), limit: 10, ..query() },
        TraceQuery { service: Some("rare".into()), limit: 10, ..query() },
        TraceQuery { status: Some(TraceStatus::Ok), limit: 10, ..query() },
    ] {
        let mut found = Vec::new();
        let mut pages = 0;
        let mut page = b.observability.list_traces(&t, &q).await.unwrap();
        loop {
            pages += 1;
            found.extend(page.items.iter().map(|s| s.trace_id));
            let Some(c) = page.next_cursor else { break };
            page = b.observability.list_traces(&t, &q.clone().resume(&c).unwrap()).await.unwrap();
        }
        assert_eq!(found, [tid(n - 5), tid(1)], "{q:?}: newest first, the one past the first window too");
        assert!(pages >= 2, "{q:?}: the first page stopped at its window");
    }
    // Without such a filter the listing is not windowed.
    let all = b.observability.list_traces(&t, &TraceQuery { limit: 1000, ..query() }).await.unwrap();
    assert_eq!(all.items.len(), 1000);
    let failed = TraceQuery { status: Some(TraceStatus::Error), limit: 1000, ..query() };
    let failed = b.observability.list_traces(&t, &failed).await.unwrap();
    assert_eq!(failed.items.len(), 1000);
    assert!(failed.items.iter().all(|s| s.status == StatusCode::Error));
}

/// A span whose parent is not stored is kept (an orphan), and the trace
/// detail stops at its span limit saying so.
pub async fn obs_orphans_are_kept_and_detail_is_capped(b: Backend) {
    let t = tenant("acme");
    let spans: Vec<NewSpan> = (1..=5).map(|i| S::new(1, i, Some(99), i64::from(i), 1).build("svc")).collect();
    b.observability.ingest(&t, spans).await.unwrap();
    let d = b.observability.trace(&t, tid(1), 3).await.unwrap();
    assert_eq!((d.spans.len(), d.truncated, d.summary.span_count), (3, true, 5));
    assert!(d.spans.windows(2).all(|w| w[0].start_ns <= w[1].start_ns), "earliest first");
    assert_eq!(d.summary.root_span_id, None);
    assert_eq!(d.summary.name, "span 1", "no root yet: the earliest span names the trace");
    b.observability.ingest(&t, vec![S::new(1, 99, None, 100, 1).build("root")]).await.unwrap();
    let s = summary(&b, &t, 1).await;
    assert_eq!((s.name.as_str(), s.service.as_deref(), s.span_count), ("span 99", Some("root"), 6));
}

/// Model calls and usage: only spans with a model, their agent or their
/// trace's, filtered, oldest first, capped with `truncated`; usage grouped
/// per day, model and agent.
pub async fn obs_model_calls_and_usage(b: Backend) {
    let t = tenant("acme");
    let spans = vec![
        S::new(1, 1, None, 0, 100)
            .attr("gen_ai.agent.name", json!("support"))
            .attr("gen_ai.operation.name", json!("invoke_agent"))
            .build("s"),
        S::new(1, 2, Some(1), 10, 50).call("gpt-4o", None, 100, 10).build("s"),
        S::new(1, 3, Some(1), 70, 20).call("gpt-4o", None, 5, 5).failed().build("s"),
        S::new(2, 1, None, DAY, 30).call("claude", Some("triage"), 7, 3).build("s"),
        S::new(3, 1, None, DAY + 5, 30).build("s"),
    ];
    b.observability.ingest(&t, spans).await.unwrap();
    let q = PerfQuery {
        from_ns: T0,
        to_ns: T0 + 2 * DAY,
        bucket_ns: DAY,
        model: None,
        agent: None,
        operation: None,
        max_calls: 100,
    };
    let calls = b.observability.model_calls(&t, &q).await.unwrap();
    assert!(!calls.truncated);
    let got: Vec<_> =
        calls.calls.iter().map(|c| (c.model.as_str(), c.agent.as_deref(), c.duration_ns, c.error)).collect();
    assert_eq!(
        got,
        [
            ("gpt-4o", Some("support"), 50, false),
            ("gpt-4o", Some("support"), 20, true),
            ("claude", Some("triage"), 30, false)
        ]
    );
    let capped = b.observability.model_calls(&t, &PerfQuery { max_calls: 2, ..q.clone() }).await.unwrap();
    assert_eq!((capped.calls.len(), capped.truncated), (2, true));
    let by_agent = PerfQuery { agent: Some("support".into()), ..q.clone() };
    assert_eq!(b.observability.model_calls(&t, &by_agent).await.unwrap().calls.len(), 2);
    let by_model = PerfQuery { model: Some("claude".into()), operation: Some("chat".into()), ..q.clone() };
    assert_eq!(b.observability.model_calls(&t, &by_model).await.unwrap().calls.len(), 1);
    let other_op = PerfQuery { operation: Some("embeddings".into()), ..q.clone() };
    assert!(b.observability.model_calls(&t, &other_op).await.unwrap().calls.is_empty());
    let day0 = T0 / DAY;
    let usage = b
        .observability
        .daily_usage(&t, &CostQuery { from_day: day0, to_day: day0 + 3, model: None, agent: None })
        .await
        .unwrap();
    let got: Vec<_> = usage
        .iter()
        .map(|u| (u.day - day0, u.model.as_str(), u.agent.as_deref(), u.calls, u.input_tokens, u.output_tokens))
        .collect();
    let first_day = (T0 + DAY) / DAY - day0;
    assert_eq!(got, [(0, "gpt-4o", Some("support"), 2, 105, 15), (first_day, "claude", Some("triage"), 1, 7, 3)]);
    let none = b
        .observability
        .daily_usage(&t, &CostQuery { from_day: day0, to_day: day0 + 3, model: Some("x".into()), agent: None })
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_invalid(
        b.observability.daily_usage(&t, &CostQuery { from_day: 5, to_day: 5, model: None, agent: None }).await,
        "an empty range",
    );
}

fn eval(
    model: Option<&str>,
    agent: Option<&str>,
    dataset: &str,
    at_secs: i64,
    acc: f64,
    examples: usize,
) -> NewEvalRun {
    NewEvalRun {
        name: Some("nightly".into()),
        model: model.map(str::to_owned),
        agent: agent.map(str::to_owned),
        dataset: dataset.into(),
        at: from_micros(1_764_400_000_000_000 + at_secs * 1_000_000 + 7),
        metrics: Scores::from([("accuracy".into(), acc), ("latency_ms".into(), 840.5)]),
        examples: (0..examples)
            .map(|i| NewEvalExample {
                input: json!({"q": format!("question {i}")}),
                expected: (i % 2 == 0).then(|| json!("a")),
                output: json!(["a", i]),
                scores: Scores::from([("accuracy".into(), 1.0)]),
            })
            .collect(),
        metadata: serde_json::Map::from_iter([("commit".to_owned(), json!("abc"))]),
    }
}

/// Evaluation runs round-trip with their examples, list newest first by
/// filter and page, the newest per model and agent of a dataset is found,
/// another tenant's run is `NotFound` and a bad run is `Invalid`.
pub async fn obs_eval_runs_round_trip_page_and_compare(b: Backend) {
    let t = tenant("acme");
    let o = &b.observability;
    let first = o.create_eval_run(&t, eval(Some("gpt-4o"), None, "refunds", 0, 0.9, 5)).await.unwrap();
    let got = o.get_eval_run(&t, first.id).await.unwrap();
    assert_eq!(got, first);
    assert_eq!(got.example_count, 5);
    let mut examples = Vec::new();
    let mut after = None;
    loop {
        let page = o.eval_examples(&t, first.id, after, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.index);
        examples.extend(page);
    }
    assert_eq!(examples.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(examples[3].input, json!({"q": "question 3"}));
    assert_eq!((examples[0].expected.clone(), examples[1].expected.clone()), (Some(json!("a")), None));
    assert_eq!(examples[4].scores["accuracy"], 1.0);
    let second = o.create_eval_run(&t, eval(Some("gpt-4o"), None, "refunds", 10, 0.95, 0)).await.unwrap();
    let claude = o.create_eval_run(&t, eval(Some("claude"), Some("support"), "refunds", 5, 0.8, 0)).await.unwrap();
    o.create_eval_run(&t, eval(Some("claude"), None, "other", 20, 0.1, 0)).await.unwrap();
    let latest = o.latest_eval_runs(&t, "refunds", 10).await.unwrap();
    assert_eq!(latest.iter().map(|r| r.id).collect::<Vec<_>>(), [claude.id, second.id]);
    let mut ids = Vec::new();
    let mut q = EvalQuery { dataset: Some("refunds".into()), limit: 1, ..EvalQuery::default() };
    loop {
        let page = o.list_eval_runs(&t, &q).await.unwrap();
        ids.extend(page.items.iter().map(|r| r.id));
        let Some(c) = page.next_cursor else { break };
        q = q.resume(&c).unwrap();
    }
    assert_eq!(ids, [second.id, claude.id, first.id], "newest `at` first");
    let agents = EvalQuery { agent: Some("support".into()), limit: 10, ..EvalQuery::default() };
    assert_eq!(o.list_eval_runs(&t, &agents).await.unwrap().items.len(), 1);
    let z = tenant("zeta");
    assert_not_found(o.get_eval_run(&z, first.id).await, "another tenant's run");
    assert_not_found(o.eval_examples(&z, first.id, None, 10).await, "another tenant's examples");
    assert_not_found(o.get_eval_run(&t, EvalRunId::new()).await, "a made-up run");
    assert_invalid(o.create_eval_run(&t, eval(None, None, "d", 0, 1.0, 0)).await, "neither model nor agent");
    let nan = NewEvalRun { metrics: Scores::from([("x".into(), f64::NAN)]), ..eval(Some("m"), None, "d", 0, 1.0, 0) };
    assert_invalid(o.create_eval_run(&t, nan).await, "a metric that is not a number");
    assert!(o.list_eval_runs(&z, &EvalQuery { limit: 10, ..EvalQuery::default() }).await.unwrap().items.is_empty());
}

/// Samples are bucketed per name and instance (mean, minimum, maximum,
/// count), are the server's (any tenant reads them), and are purged by time.
pub async fn obs_metrics_bucket_and_purge(b: Backend) {
    let o = &b.observability;
    let sample = |name, instance: &str, at_s: i64, value| MetricSample {
        name,
        instance: instance.into(),
        at_ns: T0 + at_s * SEC,
        value,
    };
    o.record_metrics(vec![
        sample(MetricName::ProcessCpu, "a", 0, 0.1),
        sample(MetricName::ProcessCpu, "a", 30, 0.3),
        sample(MetricName::ProcessCpu, "a", 60, 0.5),
        sample(MetricName::ProcessCpu, "b", 5, 1.0),
        sample(MetricName::Connections, "a", 10, 4.0),
    ])
    .await
    .unwrap();
    o.record_metrics(vec![sample(MetricName::ProcessCpu, "a", 0, 0.1)]).await.unwrap();
    let q =
        MetricQuery { names: vec![MetricName::ProcessCpu], from_ns: T0, to_ns: T0 + 120 * SEC, bucket_ns: 60 * SEC };
    for reader in [tenant("acme"), tenant("zeta")] {
        let series = o.metric_series(&reader, &q).await.unwrap();
        assert_eq!(series.len(), 2);
        let a = &series[0];
        assert_eq!((a.name, a.instance.as_str(), a.points.len()), (MetricName::ProcessCpu, "a", 2));
        let p = &a.points[0];
        assert_eq!((p.start_ns, p.samples), (T0, 2), "a sample recorded twice is stored once");
        assert!((p.avg - 0.2).abs() < 1e-9 && (p.min - 0.1).abs() < 1e-9 && (p.max - 0.3).abs() < 1e-9);
        assert_eq!(a.points[1].start_ns, T0 + 60 * SEC);
        assert_eq!(series[1].instance, "b");
    }
    let every = MetricQuery { names: vec![], ..q.clone() };
    assert_eq!(o.metric_series(&tenant("acme"), &every).await.unwrap().len(), 3);
    assert_eq!(o.purge_metrics(T0 + 31 * SEC, 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(o.purge_metrics(T0 + 31 * SEC, 100).await.unwrap(), 3);
    let left = o.metric_series(&tenant("acme"), &every).await.unwrap();
    assert_eq!(left.iter().map(|s| s.points.iter().map(|p| p.samples).sum::<i64>()).sum::<i64>(), 1);
}

/// Retention deletes whole traces that ended before the cutoff, in every
/// tenant, with their spans, events and links, at most `limit` at a time,
/// and keeps the others whole.
pub async fn obs_purge_removes_whole_old_traces(b: Backend) {
    let o = &b.observability;
    let (a, z) = (tenant("acme"), tenant("zeta"));
    let with_event = |s: NewSpan| {
        let mut s = s;
        s.events.push(memlayer_domain::observability::SpanEvent {
            time_ns: s.start_ns,
            name: "e".into(),
            attributes: Attributes::new(),
            dropped_attributes_count: 0,
        });
        s
    };
    o.ingest(&a, vec![with_event(S::new(1, 1, None, 0, 10).build("s")), S::new(1, 2, Some(1), 1, 1).build("s")])
        .await
        .unwrap();
    o.ingest(&z, vec![S::new(2, 1, None, 5, 10).build("s")]).await.unwrap();
    o.ingest(&a, vec![S::new(3, 1, None, 0, 10 * SEC).build("s")]).await.unwrap();
    let cutoff = T0 + SEC;
    assert_eq!(o.purge_traces(cutoff, 1).await.unwrap(), 1);
    assert_eq!(o.purge_traces(cutoff, 100).await.unwrap(), 1);
    assert_eq!(o.purge_traces(cutoff, 100).await.unwrap(), 0);
    assert_not_found(o.trace(&a, tid(1), 10).await, "an old trace");
    assert_not_found(o.trace(&z, tid(2), 10).await, "another tenant's old trace");
    assert_eq!(summary(&b, &a, 3).await.span_count, 1, "a trace that ended later stays");
    // Its spans went too: the same ids can be stored afresh.
    let again = o.ingest(&a, vec![S::new(1, 1, None, 0, 10).build("s")]).await.unwrap();
    assert_eq!(again.stored, 1);
    assert!(o.trace(&a, tid(1), 10).await.unwrap().spans[0].events.is_empty());
}

/// The store's gauges: a queued embedding counts, the database has a size.
pub async fn obs_store_gauges(b: Backend) {
    let before = b.observability.store_gauges().await.unwrap();
    let t = tenant("acme");
    let id = thread(&b, &t).await;
    b.messages.append(&t, id, vec![NewMessage::text(Role::User, "hi").unwrap()]).await.unwrap();
    let after = b.observability.store_gauges().await.unwrap();
    assert_eq!(after.embedding_queue, before.embedding_queue + 1);
    assert!(after.database_bytes.is_some_and(|n| n > 0));
}

#[allow(dead_code, reason = "keeps the trait object in scope for the cases' signatures")]
fn _object_safe(_: &dyn ObservabilityStore) {}

/// Migration 26 moves each span's events into its row and back when
/// reverted: a trace reads back the same (events in their order, equal
/// times included) before, after reverting and after applying it again,
/// and the filters whose indexes it changes still find their traces.
pub async fn obs_migration_26_moves_events_both_ways(b: Backend) {
    let t = tenant("acme");
    let event = |name: &str, at: i64, k: i64| memlayer_domain::observability::SpanEvent {
        time_ns: T0 + at,
        name: name.into(),
        attributes: Attributes::from_iter([("k".to_owned(), json!(k)), ("nested".to_owned(), json!({"a": [1, 2]}))]),
        dropped_attributes_count: u32::try_from(k).unwrap(),
    };
    let mut root = S::new(1, 1, None, 0, 100).build("bot");
    root.events = vec![event("first", 5, 1), event("same time", 5, 2), event("last", 50, 3)];
    let mut child = S::new(1, 2, Some(1), 10, 10).failed().build("bot");
    child.events = vec![event("only", 12, 4)];
    let quiet = S::new(1, 3, Some(1), 20, 10).build("bot");
    b.observability.ingest(&t, vec![root, child, quiet]).await.unwrap();
    b.observability.ingest(&t, vec![S::new(2, 1, None, 5, 10).build("other")]).await.unwrap();
    let before = b.observability.trace(&t, tid(1), 100).await.unwrap();
    assert_eq!(before.spans.iter().map(|s| s.events.len()).collect::<Vec<_>>(), [3, 1, 0]);
    let mut reverted = Vec::new();
    while !reverted.contains(&26) {
        let step = b.database.migrate_down(1).await.unwrap();
        assert_eq!(step.len(), 1, "migration 26 is applied: reverted {reverted:?}");
        reverted.push(step[0].version);
    }
    let applied: Vec<i64> = b.database.migrate_up().await.unwrap().iter().map(|m| m.version).collect();
    reverted.reverse();
    assert_eq!(applied, reverted);
    let after = b.observability.trace(&t, tid(1), 100).await.unwrap();
    assert_eq!(after, before, "the trace reads back the same");
    let list = |q: TraceQuery| {
        let o = Arc::clone(&b.observability);
        let t = t.clone();
        async move { o.list_traces(&t, &q).await.unwrap().items.iter().map(|s| s.trace_id).collect::<Vec<_>>() }
    };
    assert_eq!(list(TraceQuery { status: Some(TraceStatus::Error), ..query() }).await, [tid(1)]);
    assert_eq!(list(TraceQuery { status: Some(TraceStatus::Ok), ..query() }).await, [tid(2)]);
    assert_eq!(list(TraceQuery { service: Some("other".into()), ..query() }).await, [tid(2)]);
    assert_eq!(b.observability.purge_traces(T0 + 1_000, 10).await.unwrap(), 2, "both ended before the cutoff");
}
