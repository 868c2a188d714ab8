//! Memory processors: the [`MemoryProcessor`] trait (public, so a library
//! user can write their own and pass it in a [`crate::ContextRequest`]) and
//! the built-ins an agent or a request names ([`ProcessorSpec`]), run in
//! order on the recalled and recent messages before they are packed (the
//! token limiter is the packing itself). The system prompt, working memory
//! and summary are not processed.
//!
//! A processor that changes a message's text or tool calls does it through
//! [`ContextMessage::set_content`] / [`ContextMessage::set_tool_calls`], so
//! the message is counted again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};

use memlayer_domain::{ProcessorSpec, Role};
use regex::Regex;
use serde_json::Value;

use crate::context::ContextMessage;

/// What a processor did to a list of messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Messages removed.
    pub removed: u32,
    /// Messages changed.
    pub changed: u32,
    /// Items redacted, by kind (`email`, `phone`, `card`).
    pub redacted: BTreeMap<String, u32>,
}

impl ProcessorStats {
    /// Adds `other`'s figures to these.
    pub fn add(&mut self, other: &Self) {
        self.removed += other.removed;
        self.changed += other.changed;
        for (k, v) in &other.redacted {
            *self.redacted.entry(k.clone()).or_default() += v;
        }
    }
}

/// Transforms the messages of a context before they are packed.
///
/// `process` gets one section's candidate messages in thread order (recent
/// messages oldest first; recalled messages by relevance, each hit with its
/// neighbours) and may remove, change or reorder them. It must be
/// deterministic (the same messages give the same result), so identical
/// state still gives an identical context. Removing one half of a tool
/// exchange leaves the other to the packer, which drops a tool result
/// whose call is gone.
pub trait MemoryProcessor: Send + Sync + std::fmt::Debug {
    /// Its name in reports.
    fn name(&self) -> &str;

    /// Processes `messages` in place.
    fn process(&self, messages: &mut Vec<ContextMessage>) -> ProcessorStats;
}

/// The built-in processor `spec` names.
#[must_use]
pub fn build(spec: &ProcessorSpec) -> Arc<dyn MemoryProcessor> {
    match spec {
        ProcessorSpec::ToolCallFilter { tools } => Arc::new(ToolCallFilter { tools: tools.clone() }),
        ProcessorSpec::RoleFilter { roles } => Arc::new(RoleFilter { roles: roles.clone() }),
        ProcessorSpec::Truncate { max_chars } => Arc::new(Truncate { max_chars: *max_chars as usize }),
        ProcessorSpec::Dedupe => Arc::new(Dedupe),
        ProcessorSpec::RedactPii => Arc::new(RedactPii),
    }
}

/// Removes tool calls and the tool messages answering them, together: of
/// every tool when `tools` is empty, else of the tools named. An assistant
/// message left with neither text nor calls is removed; a tool message is
/// removed when it answers a removed call, or names a filtered tool.
#[derive(Debug, Clone)]
pub struct ToolCallFilter {
    /// Tool names; empty for every tool.
    pub tools: Vec<String>,
}

impl ToolCallFilter {
    fn filtered(&self, tool: &str) -> bool {
        self.tools.is_empty() || self.tools.iter().any(|t| t == tool)
    }
}

impl MemoryProcessor for ToolCallFilter {
    fn name(&self) -> &str {
        "tool_call_filter"
    }

    fn process(&self, messages: &mut Vec<ContextMessage>) -> ProcessorStats {
        let mut stats = ProcessorStats::default();
        let mut removed_calls: HashSet<String> = HashSet::new();
        for m in messages.iter_mut() {
            if m.tool_calls().is_empty() {
                continue;
            }
            let (drop, keep): (Vec<_>, Vec<_>) = m.tool_calls().iter().cloned().partition(|c| self.filtered(&c.name));
            if drop.is_empty() {
                continue;
            }
            removed_calls.extend(drop.into_iter().map(|c| c.id));
            m.set_tool_calls(keep);
            stats.changed += 1;
        }
        let before = messages.len();
        messages.retain(|m| {
            let answers_removed = m.role == Role::Tool
                && (m.tool_call_id.as_ref().is_some_and(|id| removed_calls.contains(id))
                    || m.tool_name.as_deref().is_some_and(|t| self.filtered(t)));
            let emptied = m.role == Role::Assistant && m.tool_calls().is_empty() && m.content().trim().is_empty();
            !(answers_removed || emptied)
        });
        let removed = u32::try_from(before - messages.len()).unwrap_or(u32::MAX);
        stats.removed = removed;
        stats
    }
}

/// Removes the messages of the roles named. Removing `tool` messages
/// removes the calls they answered too (as [`ToolCallFilter`] of every tool
/// does), so no assistant message is left calling a tool with no result;
/// removing `assistant` messages leaves their results without a call, and
/// the packer drops those.
#[derive(Debug, Clone)]
pub struct RoleFilter {
    /// Roles removed.
    pub roles: Vec<Role>,
}

impl MemoryProcessor for RoleFilter {
    fn name(&self) -> &str {
        "role_filter"
    }

    fn process(&self, messages: &mut Vec<ContextMessage>) -> ProcessorStats {
        let mut stats = ProcessorStats::default();
        if self.roles.contains(&Role::Tool) {
            stats = ToolCallFilter { tools: Vec::new() }.process(messages);
        }
        let before = messages.len();
        messages.retain(|m| !self.roles.contains(&m.role));
        stats.removed += u32::try_from(before - messages.len()).unwrap_or(u32::MAX);
        stats
    }
}

/// Shortens a message whose content is longer than `max_chars` characters
/// to its first `max_chars / 2` and last `max_chars / 2` characters with a
/// marker between saying how many were left out.
#[derive(Debug, Clone)]
pub struct Truncate {
    /// Longest content kept whole, in characters.
    pub max_chars: usize,
}

/// The marker between a truncated message's head and tail.
#[must_use]
pub fn truncation_marker(omitted: usize) -> String {
    format!("\n[… {omitted} characters omitted …]\n")
}

impl MemoryProcessor for Truncate {
    fn name(&self) -> &str {
        "truncate"
    }

    fn process(&self, messages: &mut Vec<ContextMessage>) -> ProcessorStats {
        let mut stats = ProcessorStats::default();
        for m in messages.iter_mut() {
            let chars = m.content().chars().count();
            if chars <= self.max_chars {
                continue;
            }
            let head_len = self.max_chars.div_ceil(2);
            let tail_len = self.max_chars / 2;
            let head: String = m.content().chars().take(head_len).collect();
            let tail: String = m.content().chars().skip(chars - tail_len).collect();
            let omitted = chars - head_len - tail_len;
            m.set_content(format!("{head}{}{tail}", truncation_marker(omitted)));
            stats.changed += 1;
        }
        stats
    }
}

/// Removes a message equal to the one right before it: same role, content,
/// tool calls and the call it answers.
#[derive(Debug, Clone, Copy)]
pub struct Dedupe;

impl MemoryProcessor for Dedupe {
    fn name(&self) -> &str {
        "dedupe"
    }

    fn process(&self, messages: &mut Vec<ContextMessage>) -> ProcessorStats {
        let before = messages.len();
        messages.dedup_by(|later, earlier| {
            later.role == earlier.role
                && later.content() == earlier.content()
                && later.tool_calls() == earlier.tool_calls()
                && later.tool_call_id == earlier.tool_call_id
                && later.section == earlier.section
        });
        ProcessorStats { removed: u32::try_from(before - messages.len()).unwrap_or(u32::MAX), ..Default::default() }
    }
}

/// Replaces e-mail addresses, phone numbers and payment card numbers in
/// contents and tool-call arguments with `[redacted email]`, `[redacted
/// phone]` and `[redacted card]`, counting each.
///
/// - E-mail: `local@domain.tld` (letters, digits and `._%+-` before the
///   `@`, a dotted domain, a top-level domain of two letters or more).
/// - Card: 13 to 19 digits, written as one run or grouped as cards are
///   (fours, or 4-6-5), by single spaces or dashes, that pass the Luhn
///   check (other digit runs are left alone).
/// - Phone: digit groups joined by single spaces or dashes, optionally
///   after a `+` country code and a parenthesised area code: 7 to 15 digits
///   with a `+` or parentheses, 9 to 15 without; a match starting with a
///   date (`2024-05-01`) is not one. A single run of digits without `+` is
///   not taken for a phone number, nor are dotted numbers (versions,
///   addresses). These are heuristics: they miss unusual spellings and may
///   take a long grouped number for a phone number.
#[derive(Debug, Clone, Copy)]
pub struct RedactPii;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| compile(r"(?i)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}"));
static CARD: LazyLock<Regex> =
    LazyLock::new(|| compile(r"\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{4,5}|\d{13,19}"));
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"\+\d{7,15}|(?:\+\d{1,3}[ -]?)?(?:\(\d{1,5}\)[ -]?)?\d{1,5}(?:[ -]\d{1,8}){0,5}"));
static DATE: LazyLock<Regex> = LazyLock::new(|| compile(r"^\d{4}-\d{2}-\d{2}(?:$|[ -])"));

fn compile(pattern: &str) -> Regex {
    // The patterns are constants, tested below.
    #[allow(clippy::expect_used, reason = "a constant pattern; the unit tests compile it")]
    Regex::new(pattern).expect("constant pattern")
}

/// Whether `digits` pass the Luhn check.
#[must_use]
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn alnum_at(text: &str, end_before: usize, start_after: usize) -> (bool, bool) {
    let before = text[..end_before].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
    let after = text[start_after..].chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_');
    (before, after)
}

/// Replaces each match of `re` that `accept` takes (given the matched text
/// and the character before it) with `marker`, when no letter or digit
/// touches it; returns the new text and how many were replaced.
fn replace(text: &str, re: &Regex, marker: &str, accept: impl Fn(&str, Option<char>) -> bool) -> (String, u32) {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut n = 0;
    for m in re.find_iter(text) {
        let (before, after) = alnum_at(text, m.start(), m.end());
        if before || after || !accept(m.as_str(), text[..m.start()].chars().next_back()) {
            continue;
        }
        out.push_str(&text[last..m.start()]);
        out.push_str(marker);
        last = m.end();
        n += 1;
    }
    if n == 0 {
        return (text.to_owned(), 0);
    }
    out.push_str(&text[last..]);
    (out, n)
}

/// Redacts `text`, adding to `counts`; `None` when nothing changed.
#[must_use]
pub fn redact(text: &str, counts: &mut BTreeMap<String, u32>) -> Option<String> {
    let digits = |s: &str| s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect::<Vec<u8>>();
    let (t, emails) = replace(text, &EMAIL, "[redacted email]", |_, _| true);
    // A `+` before it makes it an international phone number.
    let (t, cards) = replace(&t, &CARD, "[redacted card]", |s, before| {
        let d = digits(s);
        before != Some('+') && (13..=19).contains(&d.len()) && luhn(&d)
    });
    let (t, phones) = replace(&t, &PHONE, "[redacted phone]", |s, _| {
        let n = digits(s).len();
        let marked = s.starts_with('+') || s.contains('(');
        let grouped = s.contains([' ', '-']);
        !DATE.is_match(s) && ((marked && (7..=15).contains(&n)) || (grouped && (9..=15).contains(&n)))
    });
    for (kind, n) in [("email", emails), ("card", cards), ("phone", phones)] {
        if n > 0 {
            *counts.entry(kind.to_owned()).or_default() += n;
        }
    }
    (emails + cards + phones > 0).then_some(t)
}

fn redact_json(v: &mut Value, counts: &mut BTreeMap<String, u32>) -> bool {
    // Every string is visited: no short cut once one has changed.
    let mut changed = false;
    match v {
        Value::String(s) => {
            if let Some(r) = redact(s, counts) {
                *s = r;
                changed = true;
            }
        }
        Value::Array(a) => {
            for x in a {
                changed |= redact_json(x, counts);
            }
        }
        Value::Object(o) => {
            for x in o.values_mut() {
                changed |= redact_json(x, counts);
            }
        }
        _ => {}
    }
    changed
}

impl MemoryProcessor for RedactPii {
    fn name(&self) -> &str {
        "redact_pii"
    }

    fn process(&self, messages: &mut Vec<ContextMessage>) -> ProcessorStats {
        let mut stats = ProcessorStats::default();
        for m in messages.iter_mut() {
            let mut counts = BTreeMap::new();
            let mut changed = false;
            if let Some(r) = redact(m.content(), &mut counts) {
                m.set_content(r);
                changed = true;
            }
            if !m.tool_calls().is_empty() {
                let mut calls = m.tool_calls().to_vec();
                let mut touched = false;
                for call in &mut calls {
                    touched |= redact_json(&mut call.arguments, &mut counts);
                }
                if touched {
                    m.set_tool_calls(calls);
                    changed = true;
                }
            }
            if changed {
                stats.changed += 1;
                for (k, v) in counts {
                    *m.redactions.entry(k.clone()).or_default() += v;
                    *stats.redacted.entry(k).or_default() += v;
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use memlayer_domain::{Section, ToolCall};
    use serde_json::json;

    use super::*;

    fn msg(role: Role, content: &str) -> ContextMessage {
        ContextMessage::new(Section::Recent, role, content)
    }

    fn call(id: &str, name: &str) -> ContextMessage {
        let mut m = msg(Role::Assistant, "");
        m.set_tool_calls(vec![ToolCall { id: id.into(), name: name.into(), arguments: json!({"q": 1}) }]);
        m
    }

    fn result(id: &str, name: Option<&str>) -> ContextMessage {
        let mut m = msg(Role::Tool, "42");
        m.tool_call_id = Some(id.into());
        m.tool_name = name.map(Into::into);
        m
    }

    fn contents(ms: &[ContextMessage]) -> Vec<String> {
        ms.iter().map(|m| format!("{}:{}", m.role, m.content())).collect()
    }

    #[test]
    fn tool_call_filter_removes_calls_with_their_results() {
        let mut ms = vec![
            msg(Role::User, "hi"),
            call("c1", "lookup"),
            result("c1", None),
            call("c2", "weather"),
            result("c2", Some("weather")),
            msg(Role::Assistant, "done"),
        ];
        let stats = ToolCallFilter { tools: vec!["lookup".into()] }.process(&mut ms);
        assert_eq!(contents(&ms), ["user:hi", "assistant:", "tool:42", "assistant:done"]);
        assert_eq!(ms[1].tool_calls()[0].name, "weather");
        assert_eq!((stats.removed, stats.changed), (2, 1));
        let stats = ToolCallFilter { tools: vec![] }.process(&mut ms);
        assert_eq!(contents(&ms), ["user:hi", "assistant:done"]);
        assert_eq!(stats.removed, 2);
        // An assistant message with text keeps its text when its calls go.
        let mut with_text = vec![call("c3", "lookup")];
        with_text[0].set_content("let me look");
        ToolCallFilter { tools: vec![] }.process(&mut with_text);
        assert_eq!(contents(&with_text), ["assistant:let me look"]);
        assert!(with_text[0].tool_calls().is_empty() && with_text[0].tokens().is_none(), "counted again");
    }

    #[test]
    fn role_filter_removes_roles() {
        let mut ms = vec![msg(Role::User, "a"), msg(Role::Assistant, "b"), msg(Role::User, "c")];
        let stats = RoleFilter { roles: vec![Role::User] }.process(&mut ms);
        assert_eq!(contents(&ms), ["assistant:b"]);
        assert_eq!(stats.removed, 2);
        // Filtering tool results takes their calls with them.
        let mut ms = vec![msg(Role::User, "a"), call("c1", "lookup"), result("c1", None), msg(Role::Assistant, "b")];
        let stats = RoleFilter { roles: vec![Role::Tool] }.process(&mut ms);
        assert_eq!(contents(&ms), ["user:a", "assistant:b"]);
        assert_eq!(stats.removed, 2);
    }

    #[test]
    fn truncation_keeps_head_and_tail_with_a_marker() {
        let long: String = ('a'..='z').cycle().take(1000).collect();
        let mut ms = vec![msg(Role::User, &long), msg(Role::User, "short")];
        let stats = Truncate { max_chars: 100 }.process(&mut ms);
        let got = ms[0].content();
        assert!(got.starts_with(&long[..50]) && got.ends_with(&long[950..]), "{got}");
        assert!(got.contains(&truncation_marker(900)), "{got}");
        assert_eq!(ms[1].content(), "short");
        assert_eq!(stats.changed, 1);
        // Characters, not bytes: never cut inside one.
        let mut wide = vec![msg(Role::User, &"é".repeat(200))];
        Truncate { max_chars: 64 }.process(&mut wide);
        assert!(wide[0].content().starts_with(&"é".repeat(32)));
    }

    #[test]
    fn dedupe_removes_consecutive_repeats_only() {
        let mut ms = vec![msg(Role::User, "a"), msg(Role::User, "a"), msg(Role::Assistant, "a"), msg(Role::User, "a")];
        let stats = Dedupe.process(&mut ms);
        assert_eq!(contents(&ms), ["user:a", "assistant:a", "user:a"]);
        assert_eq!(stats.removed, 1);
    }

    #[test]
    fn redaction_counts_each_kind() {
        let check = |text: &str, want: &str, kinds: &[(&str, u32)]| {
            let mut counts = BTreeMap::new();
            let got = redact(text, &mut counts).unwrap_or_else(|| text.to_owned());
            assert_eq!(got, want, "{text}");
            let want_counts: BTreeMap<String, u32> = kinds.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
            assert_eq!(counts, want_counts, "{text}");
        };
        check("mail ann.lee+x@mail.example.com now", "mail [redacted email] now", &[("email", 1)]);
        check("card 4111 1111 1111 1111 ok", "card [redacted card] ok", &[("card", 1)]);
        check("card 4111-1111-1111-1111", "card [redacted card]", &[("card", 1)]);
        check("card 4111111111111111", "card [redacted card]", &[("card", 1)]);
        // Not Luhn-valid: not a card.
        check("order 4111 1111 1111 1112", "order 4111 1111 1111 1112", &[]);
        check("call +44 20 7946 0958 or (555) 123-4567", "call [redacted phone] or [redacted phone]", &[("phone", 2)]);
        check("call 555-123-4567.", "call [redacted phone].", &[("phone", 1)]);
        check("+4915112345678", "[redacted phone]", &[("phone", 1)]);
        // Dates, versions, addresses, short numbers and identifiers stay.
        check(
            "on 2024-05-01 at 10:30, v1.2.3, 192.168.10.20, order A-17, 12345, 2024-05-01 12 items",
            "on 2024-05-01 at 10:30, v1.2.3, 192.168.10.20, order A-17, 12345, 2024-05-01 12 items",
            &[],
        );
        check("1-800-555-0199 or 0049 151 12345678", "[redacted phone] or [redacted phone]", &[("phone", 2)]);
        check("a@b", "a@b", &[]);
        check("x a@b.co y c@d.org", "x [redacted email] y [redacted email]", &[("email", 2)]);
    }

    #[test]
    fn luhn_checks_known_numbers() {
        let d = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<u8>>();
        assert!(luhn(&d("4111111111111111")));
        assert!(luhn(&d("5555555555554444")));
        assert!(luhn(&d("378282246310005")));
        assert!(!luhn(&d("4111111111111112")));
        assert!(!luhn(&[]));
    }

    #[test]
    fn redaction_reaches_tool_arguments_and_counts_per_message() {
        let mut m = call("c1", "send");
        m.set_tool_calls(vec![ToolCall {
            id: "c1".into(),
            name: "send".into(),
            arguments: json!({"to": ["bob@example.org"], "n": 3}),
        }]);
        m.set_content("ring +1 415 555 2671");
        let mut ms = vec![m, msg(Role::User, "nothing here")];
        let stats = RedactPii.process(&mut ms);
        assert_eq!(ms[0].content(), "ring [redacted phone]");
        assert_eq!(ms[0].tool_calls()[0].arguments, json!({"to": ["[redacted email]"], "n": 3}));
        assert_eq!(stats.changed, 1);
        assert_eq!(stats.redacted.get("email"), Some(&1));
        assert_eq!(stats.redacted.get("phone"), Some(&1));
        assert_eq!(ms[0].redactions.values().sum::<u32>(), 2);
        assert!(ms[1].redactions.is_empty());
    }

    #[test]
    fn build_names_each_builtin() {
        for (spec, name) in [
            (ProcessorSpec::Dedupe, "dedupe"),
            (ProcessorSpec::RedactPii, "redact_pii"),
            (ProcessorSpec::Truncate { max_chars: 100 }, "truncate"),
            (ProcessorSpec::RoleFilter { roles: vec![Role::Tool] }, "role_filter"),
            (ProcessorSpec::ToolCallFilter { tools: vec![] }, "tool_call_filter"),
        ] {
            assert_eq!(build(&spec).name(), name);
            assert_eq!(spec.kind(), name);
        }
    }
}
