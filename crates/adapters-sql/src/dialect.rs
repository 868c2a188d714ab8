//! The seam between the two SQL dialects: what is spelled differently on
//! SQLite (libSQL) and Postgres, and nothing else.
//!
//! Modelled on sqlx's `Arguments::format_placeholder`, which `QueryBuilder::
//! push_bind` calls: the builder ([`crate::Sql`]) writes one statement and
//! asks the dialect only for the few pieces that differ.

/// The SQL dialects memlayer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite as embedded by libSQL: `?N` placeholders.
    Sqlite,
    /// Postgres: `$N` placeholders.
    Postgres,
}

impl Dialect {
    /// Writes the placeholder of the `n`-th bound parameter (1-based).
    pub fn push_placeholder(self, n: usize, sql: &mut String) {
        sql.push(match self {
            Self::Sqlite => '?',
            Self::Postgres => '$',
        });
        sql.push_str(&n.to_string());
    }

    /// The placeholder of the `n`-th bound parameter (1-based).
    #[must_use]
    pub fn placeholder(self, n: usize) -> String {
        let mut s = String::new();
        self.push_placeholder(n, &mut s);
        s
    }

    /// A test that `haystack` contains `needle` as a substring, case-sensitively
    /// and without pattern characters (both are SQL expressions).
    #[must_use]
    pub fn contains(self, haystack: &str, needle: &str) -> String {
        match self {
            Self::Sqlite => format!("instr({haystack}, {needle}) > 0"),
            Self::Postgres => format!("strpos({haystack}, {needle}) > 0"),
        }
    }

    /// A text column as compared and sorted bytewise. SQLite's default
    /// collation is bytewise already; Postgres says `COLLATE "C"` (the columns
    /// are declared so, saying it here keeps listings bytewise whatever the
    /// schema says).
    #[must_use]
    pub fn bytewise(self, column: &str) -> String {
        match self {
            Self::Sqlite => column.to_owned(),
            Self::Postgres => format!("{column} COLLATE \"C\""),
        }
    }

    /// `a` differs from `b`, NULL being a value like any other.
    #[must_use]
    pub fn is_distinct(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("{a} IS NOT {b}"),
            Self::Postgres => format!("{a} IS DISTINCT FROM {b}"),
        }
    }

    /// A boolean literal as the dialect stores it (SQLite: 0/1, so that
    /// partial indexes `WHERE flag = 1` still apply).
    #[must_use]
    pub fn bool_literal(self, b: bool) -> &'static str {
        match (self, b) {
            (Self::Sqlite, true) => "1",
            (Self::Sqlite, false) => "0",
            (Self::Postgres, true) => "true",
            (Self::Postgres, false) => "false",
        }
    }

    /// The full-text query for a caller's plain words (libSQL: an FTS5
    /// `MATCH` string; Postgres: a `to_tsquery` input), bound as a parameter:
    /// the text's Unicode words (letters and digits, split at everything
    /// else), lowercased and deduplicated, stop words left out, by `memlayer_domain::query_terms`,
    /// each quoted for the engine (FTS5: a string with `"` doubled; tsquery: a
    /// lexeme with `\` and `'` escaped, though words never contain them),
    /// OR-ed so the ranking counts how many and how rare the matching words
    /// are. No operator, column filter, prefix or `NEAR` of the caller's ever
    /// reaches the engine. `None` when the text has no word.
    #[must_use]
    pub fn text_query(self, text: &str) -> Option<String> {
        let terms = memlayer_domain::query_terms(text);
        if terms.is_empty() {
            return None;
        }
        let quoted = terms.iter().map(|t| match self {
            Self::Sqlite => format!("\"{}\"", t.replace('"', "\"\"")),
            Self::Postgres => format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''")),
        });
        Some(quoted.collect::<Vec<_>>().join(match self {
            Self::Sqlite => " OR ",
            Self::Postgres => " | ",
        }))
    }

    /// The smaller of two expressions (SQLite's two-argument `min`,
    /// Postgres's `least`).
    #[must_use]
    pub fn least(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("min({a}, {b})"),
            Self::Postgres => format!("least({a}, {b})"),
        }
    }

    /// The larger of two expressions (`max` / `greatest`).
    #[must_use]
    pub fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("max({a}, {b})"),
            Self::Postgres => format!("greatest({a}, {b})"),
        }
    }

    /// `a` equals `b`, NULL equal to NULL.
    #[must_use]
    pub fn is_same(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("{a} IS {b}"),
            Self::Postgres => format!("{a} IS NOT DISTINCT FROM {b}"),
        }
    }

    /// A JSON column as its text (libSQL stores JSON as text already).
    #[must_use]
    pub fn json_text(self, column: &str) -> String {
        match self {
            Self::Sqlite => column.to_owned(),
            Self::Postgres => format!("{column}::text"),
        }
    }

    /// Whether every table, link tables included, carries its tenant.
    /// Postgres needs it for its row-level security policies; libSQL's link
    /// tables reach their tenant through the rows they link.
    #[must_use]
    pub fn tenant_on_every_table(self) -> bool {
        matches!(self, Self::Postgres)
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn placeholders_are_numbered_per_dialect() {
        assert_eq!(Dialect::Sqlite.placeholder(3), "?3");
        assert_eq!(Dialect::Postgres.placeholder(3), "$3");
        assert_eq!(Dialect::Postgres.placeholder(12), "$12");
    }

    #[test]
    fn text_queries_quote_every_word() {
        let fts = |t: &str| Dialect::Sqlite.text_query(t);
        assert_eq!(fts("Refund kettle").as_deref(), Some("\"refund\" OR \"kettle\""));
        // `or` is a stop word (left out), so an operator never reaches FTS5 either way.
        assert_eq!(fts("\"foo\" OR bar*  NEAR(").as_deref(), Some("\"foo\" OR \"bar\" OR \"near\""));
        assert_eq!(fts("OR").as_deref(), Some("\"or\""));
        assert_eq!(fts("x:b (c) -d ^e").as_deref(), Some("\"x\" OR \"b\" OR \"c\" OR \"d\" OR \"e\""));
        assert_eq!(fts("café naïve 東京").as_deref(), Some("\"café\" OR \"naïve\" OR \"東京\""));
        let ts = |t: &str| Dialect::Postgres.text_query(t);
        assert_eq!(ts("Refund kettle").as_deref(), Some("'refund' | 'kettle'"));
        assert_eq!(ts("x:b (c) -d ^e !f & g").as_deref(), Some("'x' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g'"));
        assert_eq!(ts("\"foo\" OR bar*  NEAR(").as_deref(), Some("'foo' | 'bar' | 'near'"));
        assert_eq!(ts("café naïve 東京").as_deref(), Some("'café' | 'naïve' | '東京'"));
        assert_eq!(ts("x x X").as_deref(), Some("'x'"));
        assert_eq!(fts("x x X").as_deref(), Some("\"x\""));
        assert_eq!(ts("' OR 1=1 --").as_deref(), Some("'1'"));
        assert_eq!(ts("' OR --").as_deref(), Some("'or'"));
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let q = |t: &str| dialect.text_query(t);
            assert_eq!(q("x x X"), q("x"));
            assert_eq!(q("... --- ()"), None);
            assert_eq!(q(""), None);
            let many: String = (0..200).map(|i| format!("w{i} ")).collect();
            let sep = if dialect == Dialect::Sqlite { " OR " } else { " | " };
            assert_eq!(q(&many).unwrap().matches(sep).count(), memlayer_domain::MAX_QUERY_TERMS - 1);
        }
    }

    #[test]
    fn functions_that_differ_are_spelled_per_dialect() {
        assert_eq!(Dialect::Sqlite.contains("name", "?2"), "instr(name, ?2) > 0");
        assert_eq!(Dialect::Postgres.contains("name", "$2"), "strpos(name, $2) > 0");
        assert_eq!(Dialect::Sqlite.bytewise("name"), "name");
        assert_eq!(Dialect::Postgres.bytewise("name"), "name COLLATE \"C\"");
        assert_eq!(Dialect::Sqlite.is_distinct("id", "?3"), "id IS NOT ?3");
        assert_eq!(Dialect::Postgres.is_distinct("id", "$3"), "id IS DISTINCT FROM $3");
        assert_eq!(Dialect::Sqlite.least("a", "b"), "min(a, b)");
        assert_eq!(Dialect::Postgres.greatest("a", "b"), "greatest(a, b)");
        assert_eq!(Dialect::Postgres.is_same("a", "$1"), "a IS NOT DISTINCT FROM $1");
        assert_eq!(Dialect::Postgres.json_text("s.attributes"), "s.attributes::text");
    }
}
