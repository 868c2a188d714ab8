//! Values crossing the driver boundary, in neither driver's types.
//!
//! An adapter binds a [`SqlValue`] with its driver (libSQL: ids as 16-byte
//! blobs, times as microseconds, booleans as 0/1, JSON as text; Postgres: the
//! column's own type) and hands each fetched row back as `SqlValue`s;
//! [`Cells`] reads them into domain values accepting either encoding, so a
//! row decoder is written once. A value of the wrong kind is a corrupt row
//! (`Backend`), never a panic.

use std::borrow::Cow;

use memlayer_domain::{Timestamp, from_micros};
use memlayer_ports::StoreError;
use uuid::Uuid;

use crate::corrupt;

/// One bound parameter or fetched column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// An id.
    Uuid(Uuid),
    /// A point in time (stored at microsecond precision).
    Timestamp(Timestamp),
    /// A JSON document.
    Json(serde_json::Value),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<i64> for SqlValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<u32> for SqlValue {
    fn from(i: u32) -> Self {
        Self::Int(i64::from(i))
    }
}

impl From<f64> for SqlValue {
    fn from(f: f64) -> Self {
        Self::Real(f)
    }
}

impl From<bool> for SqlValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<Uuid> for SqlValue {
    fn from(u: Uuid) -> Self {
        Self::Uuid(u)
    }
}

impl From<Timestamp> for SqlValue {
    fn from(t: Timestamp) -> Self {
        Self::Timestamp(t)
    }
}

impl<T: Into<Self>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

impl SqlValue {
    /// What kind of value this is, for error messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Int(_) => "an integer",
            Self::Real(_) => "a real",
            Self::Text(_) => "text",
            Self::Bool(_) => "a boolean",
            Self::Uuid(_) => "a uuid",
            Self::Timestamp(_) => "a timestamp",
            Self::Json(_) => "JSON",
            Self::Blob(_) => "a blob",
        }
    }
}

/// Where [`Cells`] reads a row's columns from: a fetched row of neutral
/// values (`&[SqlValue]`), or a driver's row converted one column at a time
/// as it is read, so a hot decoder copies no whole row first.
pub trait CellSource {
    /// Column `idx`, borrowed when the source holds neutral values, owned
    /// when it converts the driver's; `None` past the last column.
    ///
    /// # Errors
    /// The driver's, when it cannot read the column.
    fn cell(&self, idx: usize) -> Result<Option<Cow<'_, SqlValue>>, StoreError>;
}

impl CellSource for &[SqlValue] {
    fn cell(&self, idx: usize) -> Result<Option<Cow<'_, SqlValue>>, StoreError> {
        Ok(self.get(idx).map(Cow::Borrowed))
    }
}

/// Typed reads of one fetched row's columns, by position, naming the table
/// and column in errors. Each getter reads its column once; text, bytes and
/// JSON an owned source hands over are moved, not copied.
#[derive(Debug)]
pub struct Cells<S> {
    row: S,
    table: &'static str,
}

impl<'a> Cells<&'a [SqlValue]> {
    /// Reads `row`, a row of `table`.
    #[must_use]
    pub fn new(row: &'a [SqlValue], table: &'static str) -> Self {
        Self { row, table }
    }
}

impl<S: CellSource> Cells<S> {
    /// Reads the row `source` gives, a row of `table`.
    #[must_use]
    pub fn of(source: S, table: &'static str) -> Self {
        Self { row: source, table }
    }

    fn get(&self, idx: usize, column: &'static str) -> Result<Cow<'_, SqlValue>, StoreError> {
        self.row.cell(idx)?.ok_or_else(|| corrupt(self.table, column, "missing column"))
    }

    fn wrong(&self, column: &'static str, want: &str, found: &SqlValue) -> StoreError {
        corrupt(self.table, column, format!("expected {want}, found {}", found.kind()))
    }

    fn null(&self, column: &'static str) -> StoreError {
        corrupt(self.table, column, "unexpected NULL")
    }

    /// `value` as text, moved out when owned.
    fn text_of(&self, value: Cow<'_, SqlValue>, column: &'static str) -> Result<String, StoreError> {
        match value {
            Cow::Owned(SqlValue::Text(s)) => Ok(s),
            Cow::Borrowed(SqlValue::Text(s)) => Ok(s.clone()),
            other => Err(self.wrong(column, "text", &other)),
        }
    }

    /// `value` as a JSON document, stored as one or as its text.
    fn json_of<T: serde::de::DeserializeOwned>(
        &self,
        value: Cow<'_, SqlValue>,
        column: &'static str,
    ) -> Result<T, StoreError> {
        let parsed = match value {
            Cow::Owned(SqlValue::Json(v)) => serde_json::from_value(v),
            Cow::Borrowed(SqlValue::Json(v)) => T::deserialize(v),
            Cow::Owned(SqlValue::Text(s)) => serde_json::from_str(&s),
            Cow::Borrowed(SqlValue::Text(s)) => serde_json::from_str(s),
            other => return Err(self.wrong(column, "JSON", &other)),
        };
        parsed.map_err(|e| corrupt(self.table, column, e))
    }

    /// Text.
    pub fn text(&self, idx: usize, column: &'static str) -> Result<String, StoreError> {
        self.text_of(self.get(idx, column)?, column)
    }

    /// Text, or NULL.
    pub fn opt_text(&self, idx: usize, column: &'static str) -> Result<Option<String>, StoreError> {
        match self.get(idx, column)? {
            v if matches!(*v, SqlValue::Null) => Ok(None),
            v => self.text_of(v, column).map(Some),
        }
    }

    /// Text parsed by `parse`; a failure is a corrupt row.
    pub fn parse<T, E: ToString>(
        &self,
        idx: usize,
        column: &'static str,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        parse(self.text(idx, column)?).map_err(|e| corrupt(self.table, column, e))
    }

    /// An integer, or NULL.
    pub fn opt_int(&self, idx: usize, column: &'static str) -> Result<Option<i64>, StoreError> {
        match *self.get(idx, column)? {
            SqlValue::Null => Ok(None),
            SqlValue::Int(i) => Ok(Some(i)),
            ref other => Err(self.wrong(column, "an integer", other)),
        }
    }

    /// An integer.
    pub fn int(&self, idx: usize, column: &'static str) -> Result<i64, StoreError> {
        self.opt_int(idx, column)?.ok_or_else(|| self.null(column))
    }

    /// A `u32`, or NULL.
    pub fn opt_u32(&self, idx: usize, column: &'static str) -> Result<Option<u32>, StoreError> {
        self.opt_int(idx, column)?.map(u32::try_from).transpose().map_err(|e| corrupt(self.table, column, e))
    }

    /// A `u32`.
    pub fn u32(&self, idx: usize, column: &'static str) -> Result<u32, StoreError> {
        self.opt_u32(idx, column)?.ok_or_else(|| self.null(column))
    }

    /// A float (SQLite stores integral reals as integers).
    pub fn real(&self, idx: usize, column: &'static str) -> Result<f64, StoreError> {
        match *self.get(idx, column)? {
            SqlValue::Real(f) => Ok(f),
            #[allow(clippy::cast_precision_loss, reason = "SQLite stores integral REALs as integers")]
            SqlValue::Int(i) => Ok(i as f64),
            ref other => Err(self.wrong(column, "a real", other)),
        }
    }

    /// Bytes, or NULL.
    pub fn opt_blob(&self, idx: usize, column: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get(idx, column)? {
            Cow::Owned(SqlValue::Blob(bytes)) => Ok(Some(bytes)),
            Cow::Borrowed(SqlValue::Blob(bytes)) => Ok(Some(bytes.clone())),
            v if matches!(*v, SqlValue::Null) => Ok(None),
            other => Err(self.wrong(column, "a blob", &other)),
        }
    }

    /// Bytes.
    pub fn blob(&self, idx: usize, column: &'static str) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(idx, column)?.ok_or_else(|| self.null(column))
    }

    /// A boolean, stored as one or as 0/1.
    pub fn bool(&self, idx: usize, column: &'static str) -> Result<bool, StoreError> {
        match *self.get(idx, column)? {
            SqlValue::Bool(b) => Ok(b),
            SqlValue::Int(i) => Ok(i != 0),
            ref other => Err(self.wrong(column, "a boolean", other)),
        }
    }

    /// An id, stored as one or as the UUID's 16 big-endian bytes.
    pub fn uuid(&self, idx: usize, column: &'static str) -> Result<Uuid, StoreError> {
        match *self.get(idx, column)? {
            SqlValue::Uuid(u) => Ok(u),
            SqlValue::Blob(ref bytes) => <[u8; 16]>::try_from(bytes.as_slice())
                .map(Uuid::from_bytes)
                .map_err(|_| corrupt(self.table, column, format!("expected 16 bytes, found {}", bytes.len()))),
            ref other => Err(self.wrong(column, "a uuid", other)),
        }
    }

    /// A time, stored as one or as microseconds since the epoch.
    pub fn timestamp(&self, idx: usize, column: &'static str) -> Result<Timestamp, StoreError> {
        match *self.get(idx, column)? {
            SqlValue::Timestamp(t) => Ok(t),
            SqlValue::Int(micros) => Ok(from_micros(micros)),
            ref other => Err(self.wrong(column, "a timestamp", other)),
        }
    }

    /// A JSON document, stored as one or as its text.
    pub fn json<T: serde::de::DeserializeOwned>(&self, idx: usize, column: &'static str) -> Result<T, StoreError> {
        self.json_of(self.get(idx, column)?, column)
    }

    /// A JSON document, or NULL.
    pub fn opt_json<T: serde::de::DeserializeOwned>(
        &self,
        idx: usize,
        column: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.get(idx, column)? {
            v if matches!(*v, SqlValue::Null) => Ok(None),
            v => self.json_of(v, column).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn cells_read_either_encoding() {
        let id = Uuid::now_v7();
        let t = from_micros(1_700_000_000_000_000);
        let sqlite = [
            SqlValue::Blob(id.as_bytes().to_vec()),
            SqlValue::Int(1),
            SqlValue::Int(1_700_000_000_000_000),
            SqlValue::Text("{\"a\":1}".into()),
        ];
        let postgres = [
            SqlValue::Uuid(id),
            SqlValue::Bool(true),
            SqlValue::Timestamp(t),
            SqlValue::Json(serde_json::json!({"a": 1})),
        ];
        for row in [&sqlite[..], &postgres[..]] {
            let c = Cells::new(row, "t");
            assert_eq!(c.uuid(0, "id").unwrap(), id);
            assert!(c.bool(1, "flag").unwrap());
            assert_eq!(c.timestamp(2, "at").unwrap(), t);
            assert_eq!(c.json::<serde_json::Value>(3, "doc").unwrap(), serde_json::json!({"a": 1}));
        }
    }

    /// A source that converts each column as it is read, as a driver row
    /// does, counting the reads.
    struct Converting<'a> {
        row: &'a [SqlValue],
        reads: &'a std::cell::Cell<usize>,
    }

    impl CellSource for Converting<'_> {
        fn cell(&self, idx: usize) -> Result<Option<Cow<'_, SqlValue>>, StoreError> {
            self.reads.set(self.reads.get() + 1);
            Ok(self.row.get(idx).cloned().map(Cow::Owned))
        }
    }

    #[test]
    fn a_converting_source_reads_alike_and_each_column_once() {
        let id = Uuid::now_v7();
        let row = [
            SqlValue::Text("a".into()),
            SqlValue::Null,
            SqlValue::Json(serde_json::json!({"a": 1})),
            SqlValue::Blob(id.as_bytes().to_vec()),
            SqlValue::Text("[1]".into()),
        ];
        let reads = std::cell::Cell::new(0);
        let owned = Cells::of(Converting { row: &row, reads: &reads }, "t");
        let borrowed = Cells::new(&row, "t");
        assert_eq!(owned.opt_text(0, "a").unwrap(), borrowed.opt_text(0, "a").unwrap());
        assert_eq!(owned.opt_text(1, "b").unwrap(), None);
        let doc: Option<serde_json::Value> = owned.opt_json(2, "c").unwrap();
        assert_eq!(doc, borrowed.opt_json(2, "c").unwrap());
        assert_eq!(owned.uuid(3, "d").unwrap(), id);
        assert_eq!(owned.json::<Vec<i32>>(4, "e").unwrap(), [1]);
        assert_eq!(reads.get(), 5, "one read per getter");
        assert!(owned.text(5, "f").unwrap_err().to_string().contains("missing column"));
        assert!(owned.int(0, "a").unwrap_err().to_string().contains("t.a"));
    }

    #[test]
    fn a_wrong_kind_is_a_corrupt_row_not_a_panic() {
        let row = [SqlValue::Text("x".into()), SqlValue::Blob(vec![1, 2])];
        let c = Cells::new(&row, "config_models");
        let e = c.int(0, "context_window").unwrap_err().to_string();
        assert!(e.contains("config_models.context_window") && e.contains("expected an integer"), "{e}");
        assert!(c.uuid(1, "id").unwrap_err().to_string().contains("expected 16 bytes, found 2"));
        assert!(c.text(5, "name").unwrap_err().to_string().contains("missing column"));
    }
}
