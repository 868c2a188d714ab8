//! Building bound parameter values.

use libsql::Value;
use memlayer_ports::StoreError;
use serde::Serialize;
use uuid::Uuid;

use crate::error::DriverError;

pub(crate) fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// An id as stored: the UUID's 16 big-endian bytes (for UUIDv7, byte order
/// is creation order, and SQLite compares BLOBs bytewise).
pub(crate) fn uuid(id: Uuid) -> Value {
    Value::Blob(id.as_bytes().to_vec())
}

pub(crate) fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}

/// JSON text of a value, as stored.
pub(crate) fn json_text(v: &(impl Serialize + ?Sized)) -> Result<Value, StoreError> {
    serde_json::to_string(v)
        .map(Value::Text)
        .map_err(|e| StoreError::backend(DriverError::new("serialise JSON", e.to_string())))
}
