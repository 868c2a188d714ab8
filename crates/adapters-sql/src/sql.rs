//! One statement being built: SQL text plus its bound values.
//!
//! Modelled on sqlx's `QueryBuilder`: [`Sql::push`] appends fixed text,
//! [`Sql::bind`] appends a value and writes its placeholder through the
//! [`Dialect`] (sqlx: `push_bind` calling `Arguments::format_placeholder`).
//! Text only ever comes from `&'static` fragments and the table
//! descriptions; caller input can only be bound.

use crate::{Dialect, SqlValue};

/// A statement and its arguments, for one dialect.
#[derive(Debug, Clone)]
pub struct Sql {
    dialect: Dialect,
    text: String,
    args: Vec<SqlValue>,
    fixed: bool,
}

impl Sql {
    /// An empty statement for `dialect`, marked fixed (its text depends only
    /// on the call site, so a driver may cache its prepared form).
    #[must_use]
    pub fn new(dialect: Dialect) -> Self {
        Self { dialect, text: String::new(), args: Vec::new(), fixed: true }
    }

    /// Marks the text as built from a caller's query (filters, sort): a
    /// driver must not cache its prepared form, or its cache would grow
    /// with every combination callers send.
    #[must_use]
    pub fn dynamic(mut self) -> Self {
        self.fixed = false;
        self
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Binds `value` and appends its placeholder.
    pub fn bind(&mut self, value: impl Into<SqlValue>) -> &mut Self {
        self.args.push(value.into());
        self.dialect.push_placeholder(self.args.len(), &mut self.text);
        self
    }

    /// Binds `value` and returns its placeholder without appending it, for
    /// a value used twice or inside a fragment built by the dialect.
    pub fn arg(&mut self, value: impl Into<SqlValue>) -> String {
        self.args.push(value.into());
        self.dialect.placeholder(self.args.len())
    }

    /// Binds each value, appending their placeholders separated by `, `.
    pub fn bind_list<V: Into<SqlValue>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self
    }

    /// The dialect this statement is written in.
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The SQL text.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The bound values, in placeholder order.
    #[must_use]
    pub fn args(&self) -> &[SqlValue] {
        &self.args
    }

    /// Takes the values out, for a driver that binds them by value.
    #[must_use]
    pub fn into_parts(self) -> (String, Vec<SqlValue>) {
        (self.text, self.args)
    }

    /// Whether the text is fixed per call site (see [`Sql::dynamic`]).
    #[must_use]
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_in_bind_order_per_dialect() {
        for (dialect, want) in [
            (Dialect::Sqlite, "SELECT 1 FROM t WHERE a = ?1 AND b IN (?2, ?3) AND c = ?4"),
            (Dialect::Postgres, "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3) AND c = $4"),
        ] {
            let mut sql = Sql::new(dialect);
            sql.push("SELECT 1 FROM t WHERE a = ").bind("x").push(" AND b IN (").bind_list([1_i64, 2]).push(")");
            let c = sql.arg(true);
            sql.push(" AND c = ").push(&c);
            assert_eq!(sql.text(), want);
            assert_eq!(sql.args(), [SqlValue::from("x"), SqlValue::Int(1), SqlValue::Int(2), SqlValue::Bool(true)]);
        }
    }

    #[test]
    fn bound_text_never_reaches_the_statement() {
        let evil = "x'); DROP TABLE t; --";
        let mut sql = Sql::new(Dialect::Postgres);
        sql.push("SELECT 1 FROM t WHERE a = ").bind(evil);
        assert_eq!(sql.text(), "SELECT 1 FROM t WHERE a = $1");
        assert_eq!(sql.args(), [SqlValue::from(evil)]);
        assert!(sql.is_fixed() && !sql.dynamic().is_fixed());
    }
}
