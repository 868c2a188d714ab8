//! Observability (issue 17): OpenTelemetry spans with their events and
//! links, the traces derived from them, model calls read from the GenAI
//! semantic conventions, evaluation runs, and the server's own metric
//! samples. Pure types and rules; the store and the wire live elsewhere.
//!
//! - [`span`]: a span as received ([`SpanInput`], OTLP's fields in neither
//!   wire format) accepted into a [`NewSpan`] under [`SpanLimits`] (ids and
//!   times checked, long strings cut with a marker, extra attributes,
//!   events and links dropped and counted), and what a span says about a
//!   model call ([`GenAi`]).
//! - [`trace`]: a trace's summary ([`TraceSummary`]) and how a batch of
//!   spans adds to it ([`TraceDelta`], [`TraceSummary::merge`]), the listing
//!   query and its cursor ([`TraceQuery`], [`TraceCursor`]), and a trace's
//!   spans as a tree ([`span_tree`]).
//! - [`stats`]: model performance per model, agent and time bucket from
//!   [`ModelCall`]s (exact nearest-rank percentiles), costs per day from
//!   usage and per-million-token prices, and the 30-day projection
//!   ([`project`], a least-squares line).
//! - [`eval`]: evaluation runs with metrics and examples.
//! - [`metrics`]: the server's system metric samples and their names.
//!
//! Times of spans are OTLP's: nanoseconds since the Unix epoch, as `i64`
//! (until the year 2262); [`ns_to_time`] and [`time_to_ns`] convert.

use std::fmt;
use std::str::FromStr;

use crate::{DomainError, Timestamp};

pub mod eval;
pub mod metrics;
pub mod span;
pub mod stats;
pub mod trace;

pub use eval::{
    EvalCompare, EvalExample, EvalQuery, EvalRun, MAX_COMPARE_RUNS, MAX_EVAL_EXAMPLE_BYTES, MAX_EVAL_EXAMPLES,
    MAX_EVAL_METADATA_BYTES, MAX_EVAL_TEXT, MAX_METRIC_NAME, MAX_METRICS, MetricCompare, NewEvalExample, NewEvalRun,
    Scores, check_scores, compare_runs,
};
pub use metrics::{
    MAX_METRIC_BUCKET_SECS, MIN_METRIC_BUCKET_SECS, MetricName, MetricPoint, MetricQuery, MetricSample, MetricSeries,
};
pub use span::{
    Attributes, EventInput, GenAi, LinkInput, NewSpan, Scope, SpanEvent, SpanInput, SpanLimits, SpanLink,
    SpanRejection, SpanStatus, TRUNCATION_MARKER, WRAPPING_OPERATIONS, clip_attributes,
};
pub use stats::{
    CostDay, CostQuery, DAY_SECS, Latency, MAX_BUCKET_SECS, MAX_BUCKETS, MAX_COST_DAYS, MIN_BUCKET_SECS, ModelCall,
    ModelPrice, PerfBucket, PerfQuery, PerfSeries, PerfStats, Projection, UsageRow, auto_bucket_secs, bucket_start,
    check_buckets, daily_costs, percentiles, performance, project,
};
pub use trace::{
    MAX_TEXT_SCAN_TRACES, MAX_TRACE_TEXT, StoredSpan, TraceCursor, TraceDetail, TraceQuery, TraceSort, TraceStatus,
    TraceSummary, TreeNode, span_tree,
};

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A trace's id: 16 bytes, not all zero (OTLP), written as 32 lowercase
/// hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// A span's id: 8 bytes, not all zero (OTLP), written as 16 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId([u8; 8]);

macro_rules! hex_id {
    ($name:ident, $len:literal, $what:literal) => {
        impl $name {
            /// The id of `bytes`, which must be exactly the id's length and
            /// not all zero.
            ///
            /// # Errors
            /// A [`DomainError`] on `field` saying what is wrong.
            pub fn from_bytes(field: &'static str, bytes: &[u8]) -> Result<Self, DomainError> {
                let b: [u8; $len] = bytes.try_into().map_err(|_| {
                    DomainError::new(field, format!("a {} is {} bytes, not {}", $what, $len, bytes.len()))
                })?;
                if b == [0; $len] {
                    return Err(DomainError::new(field, format!("a {} of all zeros is invalid", $what)));
                }
                Ok(Self(b))
            }

            /// Parses `2 × len` hex digits (either case).
            ///
            /// # Errors
            /// A [`DomainError`] on `field`.
            pub fn parse_hex(field: &'static str, s: &str) -> Result<Self, DomainError> {
                let bad = || {
                    DomainError::new(
                        field,
                        format!("a {} is {} hex digits, not `{}`", $what, 2 * $len, crate::ids::truncate(s)),
                    )
                };
                if s.len() != 2 * $len {
                    return Err(bad());
                }
                let mut b = [0_u8; $len];
                for (i, out) in b.iter_mut().enumerate() {
                    *out = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
                }
                Self::from_bytes(field, &b)
            }

            /// The id's bytes.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The id as lowercase hex.
            #[must_use]
            pub fn to_hex(&self) -> String {
                use std::fmt::Write as _;
                self.0.iter().fold(String::with_capacity(2 * $len), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_hex("id", s)
            }
        }
    };
}

hex_id!(TraceId, 16, "trace id");
hex_id!(SpanId, 8, "span id");

/// What a span stands for (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Not said.
    Unspecified,
    /// An internal operation.
    Internal,
    /// The server side of a synchronous call.
    Server,
    /// The client side of a synchronous call.
    Client,
    /// The sender of an asynchronous message.
    Producer,
    /// The receiver of an asynchronous message.
    Consumer,
}

impl SpanKind {
    /// Every kind, by OTLP number.
    pub const ALL: [Self; 6] =
        [Self::Unspecified, Self::Internal, Self::Server, Self::Client, Self::Producer, Self::Consumer];

    /// OTLP's number; an unknown number is `Unspecified`.
    #[must_use]
    pub fn from_otlp(n: i32) -> Self {
        usize::try_from(n).ok().and_then(|i| Self::ALL.get(i).copied()).unwrap_or(Self::Unspecified)
    }

    /// OTLP's number.
    #[must_use]
    pub fn otlp(self) -> i32 {
        Self::ALL.iter().position(|k| *k == self).and_then(|i| i32::try_from(i).ok()).unwrap_or(0)
    }

    /// The name on the wire and in storage.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }

    /// Parses [`SpanKind::as_str`].
    ///
    /// # Errors
    /// A [`DomainError`] on `kind`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| DomainError::new("kind", "unknown span kind"))
    }
}

/// A span's status code (OTLP's `Status.StatusCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// Not set.
    Unset,
    /// Explicitly fine.
    Ok,
    /// Failed.
    Error,
}

impl StatusCode {
    /// Every code, by OTLP number.
    pub const ALL: [Self; 3] = [Self::Unset, Self::Ok, Self::Error];

    /// OTLP's number; an unknown number is `Unset`.
    #[must_use]
    pub fn from_otlp(n: i32) -> Self {
        match n {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The name on the wire and in storage.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }

    /// Parses [`StatusCode::as_str`].
    ///
    /// # Errors
    /// A [`DomainError`] on `status`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| DomainError::new("status", "must be `ok`, `error` or `unset`"))
    }
}

/// The time `ns` nanoseconds after the Unix epoch.
#[must_use]
pub fn ns_to_time(ns: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Nanoseconds since the Unix epoch of `t`, clamped to `i64`.
#[must_use]
pub fn time_to_ns(t: Timestamp) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.unix_timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// Nanoseconds as milliseconds, with fractions.
#[must_use]
pub fn ns_to_ms(ns: i64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "durations are far below 2^53 ns of error")]
    let ms = ns as f64 / 1e6;
    ms
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_hex_of_their_length_and_not_zero() {
        let t = TraceId::parse_hex("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736").unwrap();
        assert_eq!(t.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceId::from_bytes("t", t.as_bytes()).unwrap(), t);
        let e = TraceId::parse_hex("id", &"0".repeat(32)).unwrap_err();
        assert!(e.reason.contains("all zeros"), "{e}");
        assert!(TraceId::parse_hex("id", "4bf9").unwrap_err().reason.contains("32 hex digits"));
        assert!(TraceId::parse_hex("id", &"g".repeat(32)).is_err());
        assert!(TraceId::parse_hex("id", &"é".repeat(16)).is_err(), "multi-byte characters never split");
        assert!(SpanId::from_bytes("span_id", &[1; 9]).unwrap_err().reason.contains("8 bytes, not 9"));
        assert_eq!(SpanId::parse_hex("id", "00f067aa0ba902b7").unwrap().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn kinds_and_codes_map_otlp_numbers() {
        for (i, k) in SpanKind::ALL.iter().enumerate() {
            assert_eq!(SpanKind::from_otlp(i32::try_from(i).unwrap()), *k);
            assert_eq!(k.otlp(), i32::try_from(i).unwrap());
            assert_eq!(SpanKind::parse(k.as_str()).unwrap(), *k);
        }
        assert_eq!(SpanKind::from_otlp(99), SpanKind::Unspecified);
        assert_eq!(SpanKind::from_otlp(-1), SpanKind::Unspecified);
        assert_eq!(StatusCode::from_otlp(2), StatusCode::Error);
        assert_eq!(StatusCode::from_otlp(7), StatusCode::Unset);
        assert_eq!(StatusCode::parse("ok").unwrap(), StatusCode::Ok);
        assert_eq!(StatusCode::parse("OK").unwrap_err().field, "status");
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::array::uniform16(any::<u8>())) {
            prop_assume!(bytes != [0; 16]);
            let id = TraceId::from_bytes("t", &bytes).unwrap();
            prop_assert_eq!(TraceId::parse_hex("t", &id.to_hex()).unwrap(), id);
            prop_assert_eq!(TraceId::parse_hex("t", &id.to_hex().to_uppercase()).unwrap(), id);
        }

        #[test]
        fn nanos_round_trip(ns in 0_i64..i64::MAX) {
            prop_assert_eq!(time_to_ns(ns_to_time(ns)), ns);
        }
    }
}
