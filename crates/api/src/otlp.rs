//! OTLP/HTTP trace ingest: `POST /v1/traces` (issue 17), as the
//! OpenTelemetry protocol specifies it for HTTP:
//!
//! - the body is an `ExportTraceServiceRequest`, binary protobuf
//!   (`Content-Type: application/x-protobuf`) or OTLP/JSON
//!   (`application/json`: camelCase fields, hex trace and span ids, enums as
//!   integers, 64-bit integers as strings or numbers, unknown fields
//!   ignored), optionally `Content-Encoding: gzip` (or `deflate`, which the
//!   Python exporter offers); the message types and
//!   their JSON mapping are `opentelemetry-proto`'s;
//! - a success is 200 with an `ExportTraceServiceResponse` in the
//!   request's encoding, `partialSuccess` set when spans were rejected
//!   (`rejectedSpans`) or cut (a warning in `errorMessage` with
//!   `rejectedSpans` 0);
//! - a body that does not decode is a 400 `invalid_otlp`, an unknown
//!   content type or encoding a 415, a body past a limit a 413, a spent
//!   ingest budget a 429 with `Retry-After` (OTLP senders retry it), all with
//!   memlayer's JSON error body; nothing of such a request is stored.
//!
//! Each span is accepted or rejected on its own
//! (`memlayer_domain::observability::SpanInput::accept`): invalid ids,
//! missing or impossible times and an end before the start reject the span,
//! long strings are cut with a marker, attributes, events and links past
//! the limits are dropped and counted.

use std::io::Read as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use memlayer_domain::observability::{EventInput, LinkInput, NewSpan, Scope, SpanInput, SpanLimits, clip_attributes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::Value;

use crate::auth::Write;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "OTLP/HTTP bodies are `Content-Type: application/x-protobuf` or `application/json`",
            )),
        }
    }
}

fn invalid_otlp(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_otlp", message)
}

fn too_large(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
}

/// The body as sent, inflated when gzipped, at most `limit` bytes.
fn inflate(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => {
            if body.len() > limit {
                return Err(too_large(format!(
                    "the body is larger than observability.max_request_bytes ({limit} bytes)"
                )));
            }
            Ok(body)
        }
        name @ ("gzip" | "deflate") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
            // HTTP's `deflate` is the zlib format (RFC 9110).
            let read = if name == "gzip" {
                flate2::read::GzDecoder::new(&body[..]).take(cap).read_to_end(&mut out)
            } else {
                flate2::read::ZlibDecoder::new(&body[..]).take(cap).read_to_end(&mut out)
            };
            read.map_err(|e| invalid_otlp(format!("the {name} body does not inflate: {e}")))?;
            if out.len() > limit {
                return Err(too_large(format!(
                    "the body inflates to more than observability.max_request_bytes ({limit} bytes)"
                )));
            }
            Ok(Bytes::from(out))
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Encoding `{}` is not supported: send gzip, deflate or none",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, ApiError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| invalid_otlp(format!("the body is not a protobuf ExportTraceServiceRequest: {e}"))),
        Encoding::Json => {
            let bad = |path: String, e: &dyn std::fmt::Display| {
                invalid_otlp(format!("the body is not OTLP/JSON ExportTraceServiceRequest: at `{path}`: {e}"))
            };
            let mut value: Value = serde_json::from_slice(body).map_err(|e| bad(".".into(), &e))?;
            normalize(&mut value);
            serde_path_to_error::deserialize(value).map_err(|e| bad(e.path().to_string(), e.inner()))
        }
    }
}

/// What proto3's JSON mapping allows and `opentelemetry-proto`'s serde
/// mapping does not: a whole number written with a fraction or exponent
/// (`5.0`, `1e3`) for an integer field, and an omitted empty list.
fn normalize(v: &mut Value) {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range checked")]
                let whole = if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    Some(Value::from(f as u64))
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    Some(Value::from(f as i64))
                } else {
                    None
                };
                if let Some(w) = whole {
                    *v = w;
                }
            }
        }
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if let ("arrayValue" | "kvlistValue", Value::Object(list)) = (k.as_str(), &mut *child) {
                    list.entry("values").or_insert_with(|| Value::Array(Vec::new()));
                }
                normalize(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// An OTLP value as JSON (see docs/OBSERVABILITY.md): bytes as base64, a
/// non-finite double as its name, an empty value as null.
fn any_value(v: AnyValue) -> Value {
    match v.value {
        // An index into a profiles dictionary: traces carry none to resolve it.
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::from(i),
        Some(any_value::Value::DoubleValue(f)) => serde_json::Number::from_f64(f).map_or_else(
            || {
                Value::String(
                    if f.is_nan() {
                        "NaN"
                    } else if f > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    }
                    .into(),
                )
            },
            Value::Number,
        ),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.into_iter().map(any_value).collect()),
        Some(any_value::Value::KvlistValue(kv)) => {
            Value::Object(kv.values.into_iter().map(|k| (k.key, k.value.map_or(Value::Null, any_value))).collect())
        }
        Some(any_value::Value::BytesValue(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

fn pairs(kvs: Vec<KeyValue>) -> Vec<(String, Value)> {
    kvs.into_iter().map(|k| (k.key, k.value.map_or(Value::Null, any_value))).collect()
}

/// What converting a request found, for the response's warning.
#[derive(Debug, Default)]
struct Conversion {
    spans: Vec<NewSpan>,
    rejected: Vec<String>,
    rejected_count: usize,
    truncated: u64,
    dropped: u64,
}

/// Most rejection reasons quoted in `errorMessage`.
const QUOTED_REJECTIONS: usize = 5;

fn convert(request: ExportTraceServiceRequest, limits: &SpanLimits) -> Conversion {
    let mut out = Conversion::default();
    for rs in request.resource_spans {
        let (resource, truncated, dropped) =
            clip_attributes(pairs(rs.resource.map(|r| r.attributes).unwrap_or_default()), limits);
        out.truncated += u64::from(truncated);
        out.dropped += u64::from(dropped);
        let resource = Arc::new(resource);
        for ss in rs.scope_spans {
            let scope = ss
                .scope
                .filter(|s| !s.name.is_empty() || !s.version.is_empty())
                .map(|s| Arc::new(Scope { name: s.name, version: s.version }));
            for span in ss.spans {
                let sent = u64::from(span.dropped_attributes_count)
                    + u64::from(span.dropped_events_count)
                    + u64::from(span.dropped_links_count)
                    + span.events.iter().map(|e| u64::from(e.dropped_attributes_count)).sum::<u64>()
                    + span.links.iter().map(|l| u64::from(l.dropped_attributes_count)).sum::<u64>();
                let status = span.status.unwrap_or_default();
                let input = SpanInput {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    trace_state: span.trace_state,
                    name: span.name,
                    kind: span.kind,
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    attributes: pairs(span.attributes),
                    dropped_attributes_count: span.dropped_attributes_count,
                    events: span
                        .events
                        .into_iter()
                        .map(|e| EventInput {
                            time_unix_nano: e.time_unix_nano,
                            name: e.name,
                            attributes: pairs(e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: span.dropped_events_count,
                    links: span
                        .links
                        .into_iter()
                        .map(|l| LinkInput {
                            trace_id: l.trace_id,
                            span_id: l.span_id,
                            trace_state: l.trace_state,
                            attributes: pairs(l.attributes),
                            dropped_attributes_count: l.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_links_count: span.dropped_links_count,
                    status_code: status.code,
                    status_message: status.message,
                };
                match input.accept(&resource, scope.as_ref(), limits) {
                    Ok(s) => {
                        out.truncated += u64::from(s.truncated_attributes);
                        let kept = u64::from(s.dropped_attributes_count)
                            + u64::from(s.dropped_events_count)
                            + u64::from(s.dropped_links_count)
                            + s.events.iter().map(|e| u64::from(e.dropped_attributes_count)).sum::<u64>()
                            + s.links.iter().map(|l| u64::from(l.dropped_attributes_count)).sum::<u64>();
                        out.dropped += kept.saturating_sub(sent);
                        out.spans.push(s);
                    }
                    Err(r) => {
                        out.rejected_count += 1;
                        if out.rejected.len() < QUOTED_REJECTIONS {
                            out.rejected.push(r.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

fn warning(c: &Conversion, limits: &SpanLimits) -> String {
    let mut parts = Vec::new();
    if c.rejected_count > 0 {
        let more = c.rejected_count.saturating_sub(c.rejected.len());
        let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
        let noun = if c.rejected_count == 1 { "span" } else { "spans" };
        parts.push(format!("{} {noun} rejected: {}{tail}", c.rejected_count, c.rejected.join("; ")));
    }
    if c.truncated > 0 {
        parts.push(format!(
            "{} string values truncated to {} bytes (observability.max_attribute_bytes), each ending with \
             `…[truncated N bytes]`",
            c.truncated, limits.max_attribute_bytes
        ));
    }
    if c.dropped > 0 {
        parts.push(format!(
            "{} attributes, events or links dropped past {} (observability.max_attributes)",
            c.dropped, limits.max_attributes
        ));
    }
    parts.join("; ")
}

fn respond(encoding: Encoding, rejected: usize, message: String) -> Response {
    let partial = (rejected > 0 || !message.is_empty()).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: message,
    });
    let body = match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse { partial_success: partial }.encode_to_vec(),
        Encoding::Json => {
            // proto3's JSON mapping writes int64 as a string.
            let v = match partial {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}}),
            };
            serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec())
        }
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    resp
}

/// Export spans (OTLP/HTTP, the OpenTelemetry protocol): a protobuf or
/// OTLP/JSON `ExportTraceServiceRequest`, optionally gzipped. 200 with an
/// `ExportTraceServiceResponse` in the request's encoding, whose
/// `partialSuccess` counts rejected spans and warns of cut ones. A body
/// that does not decode is a 400 `invalid_otlp`, nothing stored.
#[utoipa::path(post, path = "/v1/traces", security(("bearer" = ["write"])), tag = "observability",
    params(("X-Tenant-Id" = Option<String>, Header, description = "Tenant")),
    request_body(description = "An OTLP `ExportTraceServiceRequest` (see docs/OBSERVABILITY.md)", content(
        (OtlpTracesRequest = "application/json"),
        (Vec<u8> = "application/x-protobuf"))),
    responses(
        (status = 200, description = "Stored; `partialSuccess` says what was rejected or cut", content(
            (OtlpTracesResponse = "application/json"),
            (Vec<u8> = "application/x-protobuf"))),
        (status = 400, body = ErrorBody, description = "`invalid_otlp`: the body does not decode"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: past `server.body_limit_bytes`, `observability.max_request_bytes` or `observability.max_spans_per_request`"),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: another content type or encoding"),
        (status = 404, body = ErrorBody, description = "`not_found`: observability is disabled")))]
pub(crate) async fn export_traces(
    State(s): State<AppState>,
    Write(principal): Write,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = crate::observability_routes::whole_tenant(principal)?;
    crate::observability_routes::enabled(&s)?;
    let encoding = Encoding::of(&headers)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large("the body is larger than server.body_limit_bytes")
        } else {
            invalid_otlp(format!("the body could not be read: {}", r.body_text()))
        }
    })?;
    let config = s.observability.config();
    let body = inflate(&headers, body, config.max_request_bytes)?;
    let request = decode(encoding, &body)?;
    drop(body);
    let count: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    if count > config.max_spans_per_request {
        return Err(too_large(format!(
            "{count} spans; at most {} per request (observability.max_spans_per_request)",
            config.max_spans_per_request
        )));
    }
    let limits = config.span_limits();
    let conversion = convert(request, &limits);
    let message = warning(&conversion, &limits);
    let rejected = conversion.rejected_count;
    if !conversion.spans.is_empty() {
        s.observability.ingest(&principal.tenant, conversion.spans).await?;
    }
    Ok(respond(encoding, rejected, message))
}

/// The OTLP/JSON `ExportTraceServiceRequest` (its schema is completed in
/// the document by [`crate::observability_routes::complete_document`]).
#[derive(Debug, utoipa::ToSchema)]
pub struct OtlpTracesRequest {}

/// The OTLP/JSON `ExportTraceServiceResponse`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OtlpTracesResponse {
    /// Set when spans were rejected or cut.
    #[serde(rename = "partialSuccess")]
    pub partial_success: Option<OtlpPartialSuccess>,
}

/// OTLP's partial success.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OtlpPartialSuccess {
    /// Spans not stored, as a decimal string (proto3's JSON mapping of int64).
    #[serde(rename = "rejectedSpans")]
    pub rejected_spans: String,
    /// Why, and warnings (cut strings, dropped attributes).
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn values_map_to_json_as_documented() {
        let v = |value| AnyValue { value: Some(value) };
        assert_eq!(any_value(v(any_value::Value::DoubleValue(f64::NAN))), Value::String("NaN".into()));
        assert_eq!(any_value(v(any_value::Value::DoubleValue(f64::NEG_INFINITY))), Value::String("-Infinity".into()));
        assert_eq!(any_value(v(any_value::Value::BytesValue(vec![1, 2, 3]))), Value::String("AQID".into()));
        assert_eq!(any_value(AnyValue { value: None }), Value::Null);
        let kv = any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(v(any_value::Value::IntValue(-3))),
                ..KeyValue::default()
            }],
        });
        assert_eq!(any_value(v(kv)), serde_json::json!({"k": -3}));
    }

    #[test]
    fn an_empty_list_may_be_omitted_as_proto3_json_omits_it() {
        let body = br#"{"resourceSpans": [{"resource": {"attributes": [
            {"key": "a", "value": {"arrayValue": {}}}, {"key": "k", "value": {"kvlistValue": {}}}]}}]}"#;
        let req = decode(Encoding::Json, body).unwrap();
        let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
        assert_eq!(any_value(attrs[0].value.clone().unwrap()), serde_json::json!([]));
        assert_eq!(any_value(attrs[1].value.clone().unwrap()), serde_json::json!({}));
        let e = decode(Encoding::Json, br#"{"resourceSpans": [{"scopeSpans": 5, "x": {"arrayValue": {}}}]}"#);
        assert!(e.unwrap_err().message().contains("resourceSpans[0].scopeSpans"));
        let whole = br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 2.0, "startTimeUnixNano": 1e3,
            "droppedAttributesCount": 7.0, "attributes": [{"key": "d", "value": {"doubleValue": 2.0}}]}]}]}]}"#;
        let span = &decode(Encoding::Json, whole).unwrap().resource_spans[0].scope_spans[0].spans[0];
        assert_eq!((span.kind, span.start_time_unix_nano, span.dropped_attributes_count), (2, 1000, 7));
        assert_eq!(any_value(span.attributes[0].value.clone().unwrap()), serde_json::json!(2.0));
        assert!(
            decode(Encoding::Json, br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 2.5}]}]}]}"#).is_err()
        );
    }

    #[test]
    fn gzip_inflates_within_the_limit_only() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'x'; 5000]).unwrap();
        let body = Bytes::from(gz.finish().unwrap());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(inflate(&h, body.clone(), 5000).unwrap().len(), 5000);
        assert_eq!(inflate(&h, body, 4999).unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(inflate(&h, Bytes::from_static(b"nope"), 10).unwrap_err().status(), StatusCode::BAD_REQUEST);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"abc").unwrap();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("deflate"));
        assert_eq!(&inflate(&h, Bytes::from(z.finish().unwrap()), 10).unwrap()[..], b"abc");
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(inflate(&h, Bytes::new(), 10).unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
