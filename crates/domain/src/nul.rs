//! The one rule about the NUL character (U+0000) in what callers store:
//! refused, in text ([`no_nul`]) and anywhere in JSON ([`no_nul_json`]:
//! every string and every object key).
//!
//! Why: Postgres stores neither (`text` cannot hold the byte, `jsonb`
//! refuses the escape `\u0000`), while libSQL keeps JSON's escape whole and
//! its driver reads a TEXT column only up to the first NUL. Left to the
//! stores, one backend would keep what the other refuses (or cuts short).
//! Refused here, before any store sees it, every backend answers alike: a
//! 400 naming the field and, in JSON, the JSON Pointer of the string or key
//! that holds it.

use serde_json::Value;

use crate::DomainError;

/// Why a value holding NUL is refused, as every refusal words it.
pub const NUL_REFUSED: &str = "must not contain the NUL character (U+0000): no database stores it";

/// Refuses text holding NUL, naming `field`.
///
/// # Errors
/// [`DomainError`] on `field` when `value` contains U+0000.
pub fn no_nul(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.contains('\0') {
        return Err(DomainError::new(field, NUL_REFUSED));
    }
    Ok(())
}

/// `s` with every NUL replaced by U+FFFD: for text memlayer keeps rather
/// than refuses, because no caller typed it (OTLP telemetry, a
/// summariser's answer).
#[must_use]
pub fn replace_nul(s: String) -> String {
    if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s }
}

/// Refuses JSON with NUL in any string or object key, naming `field` and
/// the JSON Pointer (RFC 6901) of the first such string, or of the member
/// whose key holds it (a NUL in the pointer is written `\u0000`).
///
/// # Errors
/// [`DomainError`] on `field` when some string or key of `value` contains
/// U+0000.
pub fn no_nul_json(field: &'static str, value: &Value) -> Result<(), DomainError> {
    let mut path = Vec::new();
    match find(value, &mut path) {
        None => Ok(()),
        Some(what) => {
            let pointer: String = path.iter().map(|segment| format!("/{segment}")).collect();
            let at = if pointer.is_empty() { "the value itself".to_owned() } else { format!("`{pointer}`") };
            Err(DomainError::new(field, format!("{NUL_REFUSED}; found in the {what} at {at}")))
        }
    }
}

/// The first string or key holding NUL, depth first; `path` is left as its
/// pointer's segments (escaped).
fn find(value: &Value, path: &mut Vec<String>) -> Option<&'static str> {
    match value {
        Value::String(s) => s.contains('\0').then_some("string"),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            path.push(i.to_string());
            let found = find(item, path);
            if found.is_none() {
                path.pop();
            }
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            path.push(segment(key));
            if key.contains('\0') {
                return Some("key");
            }
            let found = find(item, path);
            if found.is_none() {
                path.pop();
            }
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A key as a pointer segment (`~` → `~0`, `/` → `~1`), NUL shown as
/// `\u0000`, at most 64 characters.
fn segment(key: &str) -> String {
    let mut out = String::new();
    for (n, c) in key.chars().enumerate() {
        if n == 64 {
            out.push('…');
            break;
        }
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            '\0' => out.push_str("\\u0000"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `Ok` for `None`, else the error's reason must end with `tail`.
    #[track_caller]
    fn check(value: &Value, tail: Option<&str>) {
        match (no_nul_json("metadata", value), tail) {
            (Ok(()), None) => {}
            (Err(e), Some(tail)) => {
                assert_eq!(e.field, "metadata");
                assert!(e.reason.starts_with(NUL_REFUSED), "{e}");
                assert!(e.reason.ends_with(tail), "{e} should end with {tail}");
            }
            (got, want) => panic!("{value}: got {got:?}, wanted {want:?}"),
        }
    }

    #[test]
    fn json_with_nul_anywhere_is_refused_naming_where() {
        check(&json!(null), None);
        check(&json!({"a": ["b", {"c": 1.5, "d": true}], "e": "\u{1}\u{7f}"}), None);
        check(&json!("a\u{0}b"), Some("found in the string at the value itself"));
        check(&json!({"note": "bad \u{0} byte"}), Some("found in the string at `/note`"));
        check(&json!({"a": [1, {"b": ["x", "\u{0}"]}]}), Some("found in the string at `/a/1/b/1`"));
        check(&json!({"ok": 1, "k\u{0}": 2}), Some("found in the key at `/k\\u0000`"));
        check(&json!({"x": {"\u{0}": null}}), Some("found in the key at `/x/\\u0000`"));
        check(&json!({"a/b~c": "\u{0}"}), Some("found in the string at `/a~1b~0c`"));
        check(&json!([[], [[["\u{0}"]]]]), Some("found in the string at `/1/0/0/0`"));
        let long = "k".repeat(100);
        let e = no_nul_json("state", &json!({long: "\u{0}"})).unwrap_err();
        assert!(e.reason.contains(&format!("`/{}…`", "k".repeat(64))), "{e}");
    }

    #[test]
    fn text_with_nul_is_refused() {
        assert!(no_nul("title", "plain \u{1} text").is_ok());
        let e = no_nul("title", "a\u{0}").unwrap_err();
        assert_eq!((e.field, e.reason.as_str()), ("title", NUL_REFUSED));
    }
}
