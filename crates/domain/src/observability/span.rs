//! A span as received ([`SpanInput`]: OTLP's fields, attribute values
//! already JSON) and as accepted ([`NewSpan`]): ids and times checked (a
//! bad span is a [`SpanRejection`], never the whole request), strings cut
//! to [`SpanLimits::max_attribute_bytes`] with [`TRUNCATION_MARKER`],
//! attributes, events and links past [`SpanLimits::max_attributes`]
//! dropped and counted in OTLP's own `dropped_*` counters, and what the
//! span says about a model call ([`GenAi`], the GenAI semantic
//! conventions).

use std::sync::Arc;

use serde_json::Value;

use super::{SpanId, SpanKind, StatusCode, TraceId};

/// Attributes as a JSON object (OTLP's `AnyValue`s as JSON values).
pub type Attributes = serde_json::Map<String, Value>;

/// What a cut string ends with: `…[truncated N bytes]`, N the bytes cut.
pub const TRUNCATION_MARKER: &str = "…[truncated ";

/// The operations (`gen_ai.operation.name`) that wrap model calls rather
/// than make one: their spans are not model calls (their usage, if any,
/// would count the calls' tokens twice).
pub const WRAPPING_OPERATIONS: [&str; 3] = ["invoke_agent", "create_agent", "execute_tool"];

/// Limits applied to every accepted span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanLimits {
    /// Longer strings (attribute values and keys, names, status messages,
    /// trace states) are cut to this many bytes, with the marker.
    pub max_attribute_bytes: usize,
    /// Most attributes per span, event, link or resource, and most events
    /// and links per span.
    pub max_attributes: usize,
}

impl Default for SpanLimits {
    fn default() -> Self {
        Self { max_attribute_bytes: 8192, max_attributes: 128 }
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary, appending the
/// marker; whether it cut.
fn clip_str(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut keep = max;
    while !s.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = s.len() - keep;
    s.truncate(keep);
    s.push_str(TRUNCATION_MARKER);
    s.push_str(&cut.to_string());
    s.push_str(" bytes]");
    true
}

/// Cuts every string within `v`; how many it cut.
fn clip_value(v: &mut Value, max: usize) -> u32 {
    match v {
        Value::String(s) => u32::from(clip_str(s, max)),
        Value::Array(items) => items.iter_mut().map(|i| clip_value(i, max)).sum(),
        Value::Object(map) => map.values_mut().map(|i| clip_value(i, max)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// `kvs` as attributes under `limits`: a repeated key keeps its last
/// value; keys past `max_attributes` are dropped; long strings are cut.
/// Returns the attributes, how many strings were cut and how many
/// attributes were dropped.
#[must_use]
pub fn clip_attributes(kvs: Vec<(String, Value)>, limits: &SpanLimits) -> (Attributes, u32, u32) {
    let (mut truncated, mut dropped) = (0_u32, 0_u32);
    let mut map = Attributes::new();
    for (mut k, mut v) in kvs {
        truncated += u32::from(clip_str(&mut k, limits.max_attribute_bytes));
        if map.len() >= limits.max_attributes && !map.contains_key(&k) {
            dropped += 1;
            continue;
        }
        truncated += clip_value(&mut v, limits.max_attribute_bytes);
        map.insert(k, v);
    }
    (map, truncated, dropped)
}

/// The instrumentation scope that made a span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Its name (a library).
    pub name: String,
    /// Its version.
    pub version: String,
}

/// A span's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanStatus {
    /// The code.
    pub code: StatusCode,
    /// The description, if any.
    pub message: Option<String>,
}

/// An event within a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// When, in nanoseconds since the epoch.
    pub time_ns: i64,
    /// Its name.
    pub name: String,
    /// Its attributes.
    pub attributes: Attributes,
    /// Attributes the sender or the limits dropped.
    pub dropped_attributes_count: u32,
}

/// A link from a span to another span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanLink {
    /// The linked span's trace.
    pub trace_id: TraceId,
    /// The linked span.
    pub span_id: SpanId,
    /// The linked span's trace state, if any.
    pub trace_state: Option<String>,
    /// Its attributes.
    pub attributes: Attributes,
    /// Attributes the sender or the limits dropped.
    pub dropped_attributes_count: u32,
}

/// What a span says about a model call, from the GenAI semantic
/// conventions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenAi {
    /// The model called: `gen_ai.request.model`, else
    /// `gen_ai.response.model`; `None` for a span that is not a model call
    /// (no model, or an operation of [`WRAPPING_OPERATIONS`]).
    pub model: Option<String>,
    /// `gen_ai.agent.name`.
    pub agent: Option<String>,
    /// `gen_ai.operation.name`.
    pub operation: Option<String>,
    /// `gen_ai.usage.input_tokens` (or the older `gen_ai.usage.prompt_tokens`).
    pub input_tokens: Option<i64>,
    /// `gen_ai.usage.output_tokens` (or the older `gen_ai.usage.completion_tokens`).
    pub output_tokens: Option<i64>,
    /// Time to the first token, in nanoseconds:
    /// `gen_ai.response.time_to_first_chunk` or
    /// `gen_ai.server.time_to_first_token` (seconds), or the AI SDK's
    /// `ai.response.msToFirstChunk` (milliseconds).
    pub ttft_ns: Option<i64>,
}

fn text(attrs: &Attributes, key: &str) -> Option<String> {
    attrs.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(|s| crate::replace_nul(s.to_owned()))
}

/// A count: a whole non-negative number, or text holding one.
fn count(attrs: &Attributes, key: &str) -> Option<i64> {
    match attrs.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e18).map(|f| {
                #[allow(clippy::cast_possible_truncation, reason = "a whole number below 9e18")]
                let i = f as i64;
                i
            })
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
}

/// Seconds (or milliseconds with `scale` 1e6) as nanoseconds.
fn duration(attrs: &Attributes, key: &str, scale: f64) -> Option<i64> {
    let v = match attrs.get(key)? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let ns = v * scale;
    #[allow(clippy::cast_possible_truncation, reason = "bounded just below")]
    (ns.is_finite() && (0.0..9.0e18).contains(&ns)).then(|| ns.round() as i64)
}

impl GenAi {
    /// What `attrs` say; `None` when they say nothing of the GenAI
    /// conventions this reads.
    #[must_use]
    pub fn of(attrs: &Attributes) -> Option<Self> {
        let operation = text(attrs, "gen_ai.operation.name");
        let wraps = operation.as_deref().is_some_and(|o| WRAPPING_OPERATIONS.contains(&o));
        let model = text(attrs, "gen_ai.request.model").or_else(|| text(attrs, "gen_ai.response.model"));
        let g = Self {
            model: model.filter(|_| !wraps),
            agent: text(attrs, "gen_ai.agent.name"),
            operation,
            input_tokens: count(attrs, "gen_ai.usage.input_tokens")
                .or_else(|| count(attrs, "gen_ai.usage.prompt_tokens")),
            output_tokens: count(attrs, "gen_ai.usage.output_tokens")
                .or_else(|| count(attrs, "gen_ai.usage.completion_tokens")),
            ttft_ns: duration(attrs, "gen_ai.response.time_to_first_chunk", 1e9)
                .or_else(|| duration(attrs, "gen_ai.server.time_to_first_token", 1e9))
                .or_else(|| duration(attrs, "ai.response.msToFirstChunk", 1e6)),
        };
        (g != Self::default()).then_some(g)
    }

    /// Whether the span is a model call.
    #[must_use]
    pub fn is_model_call(&self) -> bool {
        self.model.is_some()
    }
}

/// An accepted span.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSpan {
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent, `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state, if any.
    pub trace_state: Option<String>,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the epoch (positive).
    pub start_ns: i64,
    /// End, not before the start.
    pub end_ns: i64,
    /// Its status.
    pub status: SpanStatus,
    /// Its attributes.
    pub attributes: Attributes,
    /// The resource that made it (shared by the spans of one resource).
    pub resource: Arc<Attributes>,
    /// The instrumentation scope, if named.
    pub scope: Option<Arc<Scope>>,
    /// Its events, in the order sent.
    pub events: Vec<SpanEvent>,
    /// Its links.
    pub links: Vec<SpanLink>,
    /// Attributes the sender or the limits dropped.
    pub dropped_attributes_count: u32,
    /// Events the sender or the limits dropped.
    pub dropped_events_count: u32,
    /// Links the sender or the limits dropped (or that named invalid ids).
    pub dropped_links_count: u32,
    /// Strings the limits cut (in attributes, events, links, name, status).
    pub truncated_attributes: u32,
    /// What it says about a model call.
    pub gen_ai: Option<GenAi>,
}

impl NewSpan {
    /// End minus start.
    #[must_use]
    pub fn duration_ns(&self) -> i64 {
        self.end_ns - self.start_ns
    }

    /// Whether it failed: status error, or an `error.type` attribute.
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.status.code == StatusCode::Error || self.attributes.contains_key("error.type")
    }

    /// Its resource's `service.name` (as sent: [`crate::observability::TraceSummary`]
    /// replaces a NUL in it).
    #[must_use]
    pub fn service(&self) -> Option<&str> {
        self.resource.get("service.name").and_then(Value::as_str)
    }

    /// Its model, if it is a model call.
    #[must_use]
    pub fn model(&self) -> Option<&str> {
        self.gen_ai.as_ref().and_then(|g| g.model.as_deref())
    }

    /// Its `gen_ai.agent.name`.
    #[must_use]
    pub fn agent(&self) -> Option<&str> {
        self.gen_ai.as_ref().and_then(|g| g.agent.as_deref())
    }
}

/// An event as received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventInput {
    /// OTLP's `time_unix_nano`.
    pub time_unix_nano: u64,
    /// Its name.
    pub name: String,
    /// Its attributes.
    pub attributes: Vec<(String, Value)>,
    /// What the sender dropped.
    pub dropped_attributes_count: u32,
}

/// A link as received.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkInput {
    /// The linked trace's id bytes.
    pub trace_id: Vec<u8>,
    /// The linked span's id bytes.
    pub span_id: Vec<u8>,
    /// Its trace state.
    pub trace_state: String,
    /// Its attributes.
    pub attributes: Vec<(String, Value)>,
    /// What the sender dropped.
    pub dropped_attributes_count: u32,
}

/// A span as received: OTLP's `Span` in neither wire format, attribute
/// values already JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanInput {
    /// Trace id bytes.
    pub trace_id: Vec<u8>,
    /// Span id bytes.
    pub span_id: Vec<u8>,
    /// Parent span id bytes; empty for a root.
    pub parent_span_id: Vec<u8>,
    /// W3C trace state.
    pub trace_state: String,
    /// Its name.
    pub name: String,
    /// OTLP's kind number.
    pub kind: i32,
    /// OTLP's start.
    pub start_time_unix_nano: u64,
    /// OTLP's end.
    pub end_time_unix_nano: u64,
    /// Its attributes.
    pub attributes: Vec<(String, Value)>,
    /// What the sender dropped.
    pub dropped_attributes_count: u32,
    /// Its events.
    pub events: Vec<EventInput>,
    /// What the sender dropped.
    pub dropped_events_count: u32,
    /// Its links.
    pub links: Vec<LinkInput>,
    /// What the sender dropped.
    pub dropped_links_count: u32,
    /// OTLP's status code number.
    pub status_code: i32,
    /// The status message.
    pub status_message: String,
}

/// A span refused: its ids as sent (hex) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRejection {
    /// The trace id as sent, hex.
    pub trace_id: String,
    /// The span id as sent, hex.
    pub span_id: String,
    /// Why, naming OTLP's field.
    pub reason: String,
}

impl std::fmt::Display for SpanRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "span {} of trace {}: {}", self.span_id, self.trace_id, self.reason)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let shown = bytes.iter().take(32).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    if shown.is_empty() { "(empty)".to_owned() } else { shown }
}

fn opt(s: String, max: usize, truncated: &mut u32) -> Option<String> {
    let mut s = crate::replace_nul(s);
    *truncated += u32::from(clip_str(&mut s, max));
    (!s.is_empty()).then_some(s)
}

impl SpanInput {
    /// Accepts the span under `limits`, from `resource` and `scope`.
    ///
    /// # Errors
    /// A [`SpanRejection`] for invalid ids (a parent id must be empty or 8
    /// bytes), a missing start time, times past `i64` nanoseconds (the
    /// year 2262), or an end before the start.
    pub fn accept(
        self,
        resource: &Arc<Attributes>,
        scope: Option<&Arc<Scope>>,
        limits: &SpanLimits,
    ) -> Result<NewSpan, SpanRejection> {
        let reject =
            |reason: String| SpanRejection { trace_id: hex(&self.trace_id), span_id: hex(&self.span_id), reason };
        let trace_id = TraceId::from_bytes("trace_id", &self.trace_id).map_err(|e| reject(e.to_string()))?;
        let span_id = SpanId::from_bytes("span_id", &self.span_id).map_err(|e| reject(e.to_string()))?;
        let parent_span_id = if self.parent_span_id.is_empty() {
            None
        } else {
            Some(SpanId::from_bytes("parent_span_id", &self.parent_span_id).map_err(|e| reject(e.to_string()))?)
        };
        if self.start_time_unix_nano == 0 {
            return Err(reject("start_time_unix_nano is missing (0)".into()));
        }
        let (Ok(start_ns), Ok(end_ns)) =
            (i64::try_from(self.start_time_unix_nano), i64::try_from(self.end_time_unix_nano))
        else {
            return Err(reject("a time past the year 2262 (more than 2^63 - 1 ns)".into()));
        };
        if end_ns < start_ns {
            return Err(reject("end_time_unix_nano is before start_time_unix_nano".into()));
        }
        let max = limits.max_attribute_bytes;
        let (attributes, mut truncated, dropped) = clip_attributes(self.attributes, limits);
        let mut dropped_events_count = self.dropped_events_count;
        let mut events = Vec::with_capacity(self.events.len().min(limits.max_attributes));
        for e in self.events {
            let time = i64::try_from(e.time_unix_nano);
            if events.len() >= limits.max_attributes || time.is_err() {
                dropped_events_count = dropped_events_count.saturating_add(1);
                continue;
            }
            let (attrs, t, d) = clip_attributes(e.attributes, limits);
            truncated += t;
            let mut name = crate::replace_nul(e.name);
            truncated += u32::from(clip_str(&mut name, max));
            events.push(SpanEvent {
                time_ns: time.unwrap_or_default(),
                name,
                attributes: attrs,
                dropped_attributes_count: e.dropped_attributes_count.saturating_add(d),
            });
        }
        let mut dropped_links_count = self.dropped_links_count;
        let mut links = Vec::with_capacity(self.links.len().min(limits.max_attributes));
        for l in self.links {
            let ids = TraceId::from_bytes("trace_id", &l.trace_id)
                .and_then(|t| Ok((t, SpanId::from_bytes("span_id", &l.span_id)?)));
            let Ok((trace_id, span_id)) = ids else {
                dropped_links_count = dropped_links_count.saturating_add(1);
                continue;
            };
            if links.len() >= limits.max_attributes {
                dropped_links_count = dropped_links_count.saturating_add(1);
                continue;
            }
            let (attrs, t, d) = clip_attributes(l.attributes, limits);
            truncated += t;
            links.push(SpanLink {
                trace_id,
                span_id,
                trace_state: opt(l.trace_state, max, &mut truncated),
                attributes: attrs,
                dropped_attributes_count: l.dropped_attributes_count.saturating_add(d),
            });
        }
        let mut name = crate::replace_nul(self.name);
        truncated += u32::from(clip_str(&mut name, max));
        let status = SpanStatus {
            code: StatusCode::from_otlp(self.status_code),
            message: opt(self.status_message, max, &mut truncated),
        };
        let gen_ai = GenAi::of(&attributes);
        Ok(NewSpan {
            trace_id,
            span_id,
            parent_span_id,
            trace_state: opt(self.trace_state, max, &mut truncated),
            name,
            kind: SpanKind::from_otlp(self.kind),
            start_ns,
            end_ns,
            status,
            attributes,
            resource: Arc::clone(resource),
            scope: scope.cloned(),
            events,
            links,
            dropped_attributes_count: self.dropped_attributes_count.saturating_add(dropped),
            dropped_events_count,
            dropped_links_count,
            truncated_attributes: truncated,
            gen_ai,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn input() -> SpanInput {
        SpanInput {
            trace_id: vec![7; 16],
            span_id: vec![1; 8],
            name: "chat gpt-4o".into(),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_001_500_000_000,
            attributes: vec![
                ("gen_ai.request.model".into(), json!("gpt-4o")),
                ("gen_ai.operation.name".into(), json!("chat")),
                ("gen_ai.usage.input_tokens".into(), json!(12)),
                ("gen_ai.usage.output_tokens".into(), json!("40")),
                ("gen_ai.response.time_to_first_chunk".into(), json!(0.25)),
            ],
            ..SpanInput::default()
        }
    }

    fn accept(i: SpanInput, limits: &SpanLimits) -> Result<NewSpan, SpanRejection> {
        i.accept(&Arc::new(Attributes::new()), None, limits)
    }

    #[test]
    fn a_model_call_says_its_model_tokens_and_first_token() {
        let s = accept(input(), &SpanLimits::default()).unwrap();
        let g = s.gen_ai.clone().unwrap();
        assert_eq!(g.model.as_deref(), Some("gpt-4o"));
        assert_eq!((g.input_tokens, g.output_tokens, g.ttft_ns), (Some(12), Some(40), Some(250_000_000)));
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.duration_ns(), 1_500_000_000);
    }

    #[test]
    fn wrapping_operations_are_not_model_calls() {
        let mut i = input();
        i.attributes.push(("gen_ai.operation.name".into(), json!("invoke_agent")));
        i.attributes.push(("gen_ai.agent.name".into(), json!("support")));
        let g = accept(i, &SpanLimits::default()).unwrap().gen_ai.unwrap();
        assert_eq!(g.model, None);
        assert_eq!(g.agent.as_deref(), Some("support"));
        let plain = SpanInput { attributes: vec![("http.method".into(), json!("GET"))], ..input() };
        assert_eq!(accept(plain, &SpanLimits::default()).unwrap().gen_ai, None);
    }

    #[test]
    fn bad_ids_and_times_reject_the_span_naming_the_field() {
        let l = SpanLimits::default();
        let e = accept(SpanInput { trace_id: vec![0; 16], ..input() }, &l).unwrap_err();
        assert!(e.to_string().contains("trace_id") && e.to_string().contains("all zeros"), "{e}");
        let e = accept(SpanInput { span_id: vec![1; 3], ..input() }, &l).unwrap_err();
        assert!(e.reason.contains("span_id: a span id is 8 bytes, not 3"), "{e}");
        let e = accept(SpanInput { parent_span_id: vec![1; 16], ..input() }, &l).unwrap_err();
        assert!(e.reason.contains("parent_span_id"), "{e}");
        let e = accept(SpanInput { end_time_unix_nano: 5, ..input() }, &l).unwrap_err();
        assert_eq!(e.reason, "end_time_unix_nano is before start_time_unix_nano");
        assert_eq!(e.span_id, "0101010101010101");
        let e = accept(SpanInput { start_time_unix_nano: 0, end_time_unix_nano: 0, ..input() }, &l).unwrap_err();
        assert!(e.reason.contains("missing"));
        let e = accept(SpanInput { end_time_unix_nano: u64::MAX, ..input() }, &l).unwrap_err();
        assert!(e.reason.contains("2262"));
        let ok = accept(SpanInput { end_time_unix_nano: 1_700_000_000_000_000_000, ..input() }, &l).unwrap();
        assert_eq!(ok.duration_ns(), 0, "an instant span is fine");
    }

    #[test]
    fn nul_never_reaches_a_text_column() {
        let mut i = input();
        i.name = "a\0b".into();
        i.status_message = "\0".into();
        i.attributes.push(("gen_ai.agent.name".into(), json!("x\0")));
        let s = accept(i, &SpanLimits::default()).unwrap();
        assert_eq!((s.name.as_str(), s.status.message.as_deref()), ("a\u{fffd}b", Some("\u{fffd}")));
        assert_eq!(s.agent(), Some("x\u{fffd}"));
    }

    #[test]
    fn long_strings_are_cut_with_the_marker_and_counted() {
        let l = SpanLimits { max_attribute_bytes: 10, max_attributes: 3 };
        let mut i = input();
        i.attributes = vec![
            ("a".into(), json!("x".repeat(25))),
            ("b".into(), json!(["ééééééé", 1])),
            ("c".into(), json!(1)),
            ("d".into(), json!(2)),
            ("c".into(), json!(3)),
        ];
        i.name = "n".repeat(11);
        i.events = vec![EventInput { name: "e".into(), time_unix_nano: 1, ..EventInput::default() }; 5];
        i.links = vec![LinkInput { trace_id: vec![1; 16], span_id: vec![0; 8], ..LinkInput::default() }];
        let s = accept(i, &l).unwrap();
        assert_eq!(s.attributes["a"], json!(format!("xxxxxxxxxx{TRUNCATION_MARKER}15 bytes]")));
        assert_eq!(s.attributes["b"][0], json!(format!("ééééé{TRUNCATION_MARKER}4 bytes]")));
        assert_eq!(s.attributes["c"], json!(3), "a repeated key keeps its last value");
        assert!(!s.attributes.contains_key("d"));
        assert_eq!(s.name, format!("nnnnnnnnnn{TRUNCATION_MARKER}1 bytes]"));
        assert_eq!((s.truncated_attributes, s.dropped_attributes_count), (3, 1));
        assert_eq!((s.events.len(), s.dropped_events_count), (3, 2));
        assert_eq!((s.links.len(), s.dropped_links_count), (0, 1), "a link to an invalid id is dropped");
    }

    proptest! {
        #[test]
        fn clipping_bounds_every_string_and_keeps_short_ones(
            values in proptest::collection::vec(".{0,40}", 0..20),
            max in 3_usize..30,
            keep in 1_usize..25,
        ) {
            let l = SpanLimits { max_attribute_bytes: max, max_attributes: keep };
            let kvs: Vec<_> = values.iter().enumerate().map(|(i, v)| (format!("k{i}"), json!(v))).collect();
            let (map, truncated, dropped) = clip_attributes(kvs, &l);
            prop_assert_eq!(map.len() + dropped as usize, values.len());
            prop_assert!(map.len() <= keep);
            let cut = values.iter().take(keep).filter(|v| v.len() > max).count();
            prop_assert_eq!(truncated as usize, cut);
            for (i, v) in values.iter().take(keep).enumerate() {
                let got = map[&format!("k{i}")].as_str().unwrap();
                if v.len() <= max {
                    prop_assert_eq!(got, v.as_str());
                } else {
                    let (head, tail) = got.split_once(TRUNCATION_MARKER).unwrap();
                    prop_assert!(head.len() <= max && v.starts_with(head));
                    prop_assert_eq!(tail, format!("{} bytes]", v.len() - head.len()));
                }
            }
        }
    }
}
