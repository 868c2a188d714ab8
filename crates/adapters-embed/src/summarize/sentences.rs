//! Splitting text into sentences, and a summary's lines back into labelled
//! sentences: plain rules, deterministic, no model.
//!
//! A sentence ends at a line break, or at `.`, `!`, `?`, `…` (or the
//! full-width `。！？`) followed by whitespace, closing quotes and brackets
//! allowed in between; a period after a common abbreviation (`e.g.`, `Dr.`)
//! or a single letter (an initial) does not end one. Whitespace inside a
//! sentence is collapsed to single spaces; markdown bullets and numbering
//! at the start of a line are dropped.

/// Words after which a period does not end a sentence (lowercase, without
/// the period).
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "st", "no", "nr", "approx", "fig", "cf", "jr", "sr",
    "inc", "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

fn closes(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '*' | '_' | '`')
}

/// Whether the period at the end of `before` follows an abbreviation or an
/// initial rather than ending a sentence.
fn abbreviation(before: &str) -> bool {
    let word = before.rsplit(|c: char| c.is_whitespace() || c == '(').next().unwrap_or_default();
    let word = word.trim_end_matches('.').to_lowercase();
    if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) {
        return true;
    }
    ABBREVIATIONS.contains(&word.as_str())
}

/// A line's leading bullet (`- `, `* `, `• `) or numbering (`1. `, `2) `).
fn strip_bullet(line: &str) -> &str {
    let line = line.trim_start();
    for bullet in ["- ", "* ", "• ", "+ "] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return rest;
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return rest;
        }
    }
    line
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The sentences of `text`, in order, whitespace collapsed, empty ones left
/// out.
#[must_use]
pub(crate) fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = strip_bullet(line);
        let mut start = 0;
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            if ends_sentence(c) {
                // Take repeated marks and closers with the sentence.
                let mut j = i + 1;
                while j < chars.len() && (ends_sentence(chars[j].1) || closes(chars[j].1)) {
                    j += 1;
                }
                let at_end = j == chars.len();
                let followed_by_space = !at_end && chars[j].1.is_whitespace();
                let wide = matches!(c, '。' | '！' | '？');
                if (at_end || followed_by_space || wide) && !(c == '.' && abbreviation(&line[start..at])) {
                    let end = if at_end { line.len() } else { chars[j].0 };
                    push(&mut out, &line[start..end]);
                    start = end;
                }
                i = j;
            } else {
                i += 1;
            }
        }
        push(&mut out, &line[start..]);
    }
    out
}

fn push(out: &mut Vec<String>, piece: &str) {
    let s = collapse(piece);
    if !s.is_empty() {
        out.push(s);
    }
}

/// `s` cut to at most `max_chars` characters, at a word boundary when one
/// is near, with `…` when anything was cut.
#[must_use]
pub(crate) fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let keep: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    let cut = match keep.rfind(' ') {
        Some(space) if space * 2 >= keep.len() => &keep[..space],
        _ => keep.as_str(),
    };
    format!("{}…", cut.trim_end())
}

/// A summary line split into its label (`user`, `assistant`, `tool
/// lookup_order`…) and its sentences: the form the extractive summariser
/// writes (`label: sentence`), or free text (no label).
#[must_use]
pub(crate) fn labelled(line: &str) -> (Option<String>, Vec<String>) {
    let line = strip_bullet(line);
    if let Some((label, rest)) = line.split_once(": ") {
        let mut words = label.split(' ');
        let role = words.next().unwrap_or_default();
        let known = matches!(role, "user" | "assistant" | "system" | "tool");
        let rest_of_label: Vec<&str> = words.collect();
        let plain_name = rest_of_label.len() <= 1
            && rest_of_label
                .iter()
                .all(|w| !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c)));
        if known && plain_name && (role == "tool" || rest_of_label.is_empty()) {
            return (Some(label.to_owned()), split(rest));
        }
    }
    (None, split(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        assert_eq!(split(text), expected, "{text:?}");
    }

    #[test]
    fn sentences_end_at_marks_followed_by_space_and_at_line_breaks() {
        check(
            "Where is my refund? It was due Monday. Thanks!",
            &["Where is my refund?", "It was due Monday.", "Thanks!"],
        );
        check("First line\nsecond line.  Third   one", &["First line", "second line.", "Third one"]);
        check("Version 3.5 costs $2.50 now.", &["Version 3.5 costs $2.50 now."]);
        check("He said \"stop.\" Then left.", &["He said \"stop.\"", "Then left."]);
        check("Really?! Yes...  ok", &["Really?!", "Yes...", "ok"]);
        check("", &[]);
        check(" \n \n", &[]);
    }

    #[test]
    fn abbreviations_and_initials_do_not_end_a_sentence() {
        check("Use a kettle, e.g. the red one. Done.", &["Use a kettle, e.g. the red one.", "Done."]);
        check("Ask Dr. Smith and J. R. Tolkien today. Bye.", &["Ask Dr. Smith and J. R. Tolkien today.", "Bye."]);
    }

    #[test]
    fn bullets_and_numbering_are_dropped() {
        check(
            "- first point\n* second point\n2. third point\n10) fourth",
            &["first point", "second point", "third point", "fourth"],
        );
    }

    #[test]
    fn full_width_marks_end_sentences() {
        check("東京に行きます。明日です！", &["東京に行きます。", "明日です！"]);
    }

    #[test]
    fn shorten_keeps_words_whole_and_marks_the_cut() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("one two three four five", 12), "one two…");
        assert_eq!(shorten("ééééééééééé", 5), "éééé…");
        assert!(shorten(&"word ".repeat(100), 50).chars().count() <= 50);
    }

    #[test]
    fn labelled_lines_round_trip() {
        assert_eq!(
            labelled("user: Where is it? Soon."),
            (Some("user".into()), vec!["Where is it?".into(), "Soon.".into()])
        );
        assert_eq!(
            labelled("- tool lookup_order: sent Monday"),
            (Some("tool lookup_order".into()), vec!["sent Monday".into()])
        );
        assert_eq!(labelled("Note: the user wants a refund."), (None, vec!["Note: the user wants a refund.".into()]));
        assert_eq!(labelled("user said: hi"), (None, vec!["user said: hi".into()]));
    }
}
