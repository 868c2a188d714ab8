//! What the derived OpenAPI document cannot say by itself, added once at
//! start-up: bounds and formats of path, query and header parameters, the
//! role-dependent rules of a message, the error responses every route can
//! give (400, 413, 415, 500, 503), and that no request body or query
//! parameter holds the NUL character ([`forbid_nul`], [`no_nul`]). The
//! result must let a client generated from the document work unchanged;
//! `tests/it/fuzz.rs` holds the server to it with schemathesis.

use memlayer_domain::{CatalogEntity, MAX_PAGE_SIZE};
use serde_json::{Map, Value, json};

use crate::dto::{new_message_schema, scope_schema};

/// `TenantId`, `AgentName`, `ResourceId`, setting names: ASCII letters, digits, `- _ . : @`.
const NAME_PATTERN: &str = "^[A-Za-z0-9._:@-]+$";

/// No NUL character (U+0000) in a string: no database stores it, and the
/// domain refuses it in whatever reaches storage (`memlayer_domain::no_nul`).
const NO_NUL: &str = "^[^\\u0000]*$";

/// The component of "any JSON without NUL in a string or an object key".
const JSON_NO_NUL: &str = "JsonNoNul";

/// Makes every request body say that it holds no NUL character: each
/// string gains the pattern [`NO_NUL`] (alongside its own, through `allOf`,
/// unless its own already admits only listed characters), and each
/// free-form value (any JSON, an object's unlisted members, an array's
/// items) becomes [`JSON_NO_NUL`], recursive: `pattern` for its strings,
/// `propertyNames` for its keys, itself for members and items. The domain
/// refuses NUL in every stored string and JSON value (`no_nul_json`), so a
/// client generated from the document, and schemathesis'
/// `positive_data_acceptance`, never send what is refused. Schemas shared
/// with responses say the same of what the server answers, which holds: it
/// stores none.
fn forbid_nul(doc: &mut Value) {
    let mut pending = Vec::new();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for op in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
            let Some(content) = op.pointer_mut("/requestBody/content").and_then(Value::as_object_mut) else {
                continue;
            };
            for (media, body) in content.iter_mut() {
                if media.contains("json")
                    && !media.contains("ndjson")
                    && let Some(schema) = body.get_mut("schema")
                {
                    no_nul(schema, &mut pending);
                }
            }
        }
    }
    let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    let mut done = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if name == JSON_NO_NUL || !done.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = schemas.get_mut(&name) {
            no_nul(schema, &mut pending);
        }
    }
    let any = format!("#/components/schemas/{JSON_NO_NUL}");
    schemas.insert(
        JSON_NO_NUL.into(),
        json!({"description": "Any JSON value without the NUL character (U+0000) in a string or an object key (a \
            400 names the field and the JSON Pointer of the first)",
            "pattern": NO_NUL, "propertyNames": {"pattern": NO_NUL},
            "items": {"$ref": any}, "additionalProperties": {"$ref": any}}),
    );
}

/// [`forbid_nul`] on one schema, in place; components it names are pushed
/// to `refs`.
fn no_nul(schema: &mut Value, refs: &mut Vec<String>) {
    let Some(o) = schema.as_object_mut() else { return };
    if let Some(name) = o.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
        refs.push(name.to_owned());
        return;
    }
    for key in ["oneOf", "anyOf", "allOf", "prefixItems"] {
        for s in o.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            no_nul(s, refs);
        }
    }
    for s in o.get_mut("properties").and_then(Value::as_object_mut).into_iter().flat_map(|p| p.values_mut()) {
        no_nul(s, refs);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(s) = o.get_mut(key).filter(|s| s.is_object()) {
            no_nul(s, refs);
        }
    }
    let has = |t: &str| match o.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(ts)) => ts.iter().any(|x| x == t),
        _ => false,
    };
    let (string, object, array) = (has("string"), has("object"), has("array"));
    let any = json!({"$ref": format!("#/components/schemas/{JSON_NO_NUL}")});
    let constrained = ["enum", "const", "format", "oneOf", "anyOf", "allOf", "not", "properties", "items"]
        .iter()
        .any(|k| o.contains_key(*k));
    if !o.contains_key("type") && !constrained {
        o.insert("$ref".into(), any["$ref"].clone());
        return;
    }
    if string && !o.contains_key("enum") && !o.contains_key("const") && !o.contains_key("format") {
        let pattern = o.get("pattern").and_then(Value::as_str).map(str::to_owned);
        match pattern.as_deref() {
            None => {
                o.insert("pattern".into(), NO_NUL.into());
            }
            Some(p) if admits_only_listed(p) => {}
            Some(_) => {
                let all = o.entry("allOf").or_insert_with(|| json!([]));
                if let Some(all) = all.as_array_mut() {
                    all.push(json!({"pattern": NO_NUL}));
                }
            }
        }
    }
    if object && o.get("additionalProperties").is_none_or(|a| *a == Value::Bool(true)) {
        o.insert("propertyNames".into(), json!({"pattern": NO_NUL}));
        o.insert("additionalProperties".into(), any.clone());
    }
    if array && !o.contains_key("items") && !o.contains_key("prefixItems") {
        o.insert("items".into(), any);
    }
}

/// Whether a pattern admits no NUL: [`NO_NUL`]'s own prefix, or a pattern
/// anchored at both ends that matches only characters it lists (no negated
/// class, no `.` outside a class, no escape).
fn admits_only_listed(pattern: &str) -> bool {
    if pattern.starts_with("^[^\\u0000") {
        return true;
    }
    if !(pattern.starts_with('^') && pattern.ends_with('$')) {
        return false;
    }
    let mut in_class = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => return false,
            '[' if !in_class => {
                if chars.peek() == Some(&'^') {
                    return false;
                }
                in_class = true;
            }
            ']' if in_class => in_class = false,
            '.' if !in_class => return false,
            _ => {}
        }
    }
    true
}

/// Completes the derived document `doc` (see the module doc).
pub(crate) fn complete(doc: &mut Value) {
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        components.insert(
            "securitySchemes".into(),
            json!({"bearer": {"type": "http", "scheme": "bearer",
                "description": "An API key (`ml_<id>_<secret>`, also accepted in `X-Api-Key`) or a JWT, with \
                    `auth.mode` = `api_key` or `jwt`. With `auth.mode = none` (loopback only) no credential is \
                    sent and every caller holds every scope. The scope a route needs is in its `security`: \
                    `read`, `write` or `admin`."}}),
        );
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.insert("NewMessageDto".into(), new_message_schema());
        schemas.insert("ScopeDto".into(), scope_schema());
        schemas.insert("RunnerDto".into(), crate::workflow_routes::runner_schema());
        schemas.insert(
            "AppendBody".into(),
            json!({"description": "One message object, or `{\"messages\": [...]}` (1 to 1000, appended atomically).",
                   "oneOf": [{"$ref": "#/components/schemas/NewMessageDto"},
                             {"$ref": "#/components/schemas/MessageBatchDto"}]}),
        );
        crate::context_routes::complete_schemas(schemas);
        if let Some(texts) = schemas.get_mut("EmbedRequestDto").and_then(|s| s.pointer_mut("/properties/texts/items")) {
            *texts = json!({"type": "string", "maxLength": memlayer_domain::MAX_CONTENT_BYTES / 4,
                            "description": "At most 1 MiB of UTF-8, all texts together (262,144 characters always fit)"});
        }
    }
    crate::working_routes::complete_document(doc);
    crate::observability_routes::complete_document(doc);
    forbid_nul(doc);
    if let Some(created) =
        doc.pointer_mut("/paths/~1api~1threads~1{id}~1messages/post/responses/201/content/application~1json")
    {
        created["schema"] = json!({"oneOf": [{"$ref": "#/components/schemas/MessageDto"},
                                             {"$ref": "#/components/schemas/MessagesDto"}]});
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else { continue };
            complete_parameters(path, method, op);
            complete_responses(path, method, op);
        }
    }
}

/// The schema of a parameter named `name` in `location`, as the server parses it.
fn parameter_schema(path: &str, method: &str, name: &str, location: &str) -> Option<Value> {
    if let Some(schema) = crate::observability_routes::parameter_schema(path, name, location) {
        return Some(schema);
    }
    let uuid = json!({"type": "string", "format": "uuid"});
    let named = |max: usize| json!({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": max});
    Some(match (location, name) {
        ("header", "X-Tenant-Id") => named(64),
        ("path", "id") if path.starts_with("/api/keys/") => {
            json!({"type": "string", "pattern": "^[0-9a-f]{16}$", "minLength": 16, "maxLength": 16})
        }
        ("path", "id") if path.starts_with("/api/resources/") => named(256),
        ("path", "id" | "message_id") => uuid,
        ("path", "version") => json!({"type": "integer", "minimum": 1, "maximum": i64::MAX}),
        ("query", "agent") => named(128),
        ("path", "agent_id") => named(128),
        ("path", "category" | "key") => named(128),
        ("query", "resource_id") => named(256),
        ("query", "resource") if path == "/api/keys" => named(256),
        ("query", "agent_id") => named(128),
        ("query", "limit") => json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}),
        ("query", "direction") => json!({"type": "string", "enum": ["forward", "backward"]}),
        ("query", "model") => json!({"type": "string", "pattern": "^[!-~]+$", "minLength": 1, "maxLength": 128}),
        ("query", "count_tokens") => json!({"type": "boolean"}),
        ("query", "cursor") => json!({"type": "string",
            "description": "Opaque: a previous page's `next_cursor`, unchanged (anything else is a 400); empty means the first page"}),
        ("query", "sort") => {
            let entity = match path {
                "/api/models" => CatalogEntity::Models,
                "/api/agents" => CatalogEntity::Agents,
                "/api/tools" => CatalogEntity::Tools,
                _ => return None,
            };
            let mut values = Vec::new();
            for f in entity.fields().iter().filter(|f| f.sortable) {
                values.push(Value::String(f.name.to_owned()));
                values.push(Value::String(format!("-{}", f.name)));
            }
            json!({"type": "string", "enum": values})
        }
        _ => {
            let _ = method;
            return None;
        }
    })
}

fn complete_parameters(path: &str, method: &str, op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for p in params.iter_mut() {
        let (Some(name), Some(location)) = (
            p.get("name").and_then(Value::as_str).map(str::to_owned),
            p.get("in").and_then(Value::as_str).map(str::to_owned),
        ) else {
            continue;
        };
        if location == "query" && name == "default" {
            // A JSON value, sent as its JSON text.
            if let Some(o) = p.as_object_mut() {
                o.remove("schema");
                o.insert("content".into(), json!({"application/json": {"schema": {}}}));
            }
            continue;
        }
        if let Some(schema) = parameter_schema(path, method, &name, &location) {
            let description = p.pointer("/schema/description").cloned();
            let mut schema = schema;
            if let (Some(d), Some(o)) = (description, schema.as_object_mut()) {
                o.entry("description").or_insert(d);
            }
            p["schema"] = schema;
        }
        // The server refuses NUL in any query parameter
        // (`server::refuse_nul_in_query`).
        if location == "query"
            && let Some(schema) = p.get_mut("schema")
        {
            no_nul(schema, &mut Vec::new());
        }
    }
}

/// The writes a storage quota can refuse (`quota_exceeded`, 403 or 413).
const QUOTA_WRITES: [(&str, &str); 2] = [("post", "/api/threads"), ("post", "/api/threads/{id}/messages")];

fn error(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

fn complete_responses(path: &str, method: &str, op: &mut Map<String, Value>) {
    let has_body = op.contains_key("requestBody");
    let has_params = op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    // Derived error responses without a description get the code's meaning.
    for (status, response) in responses.iter_mut() {
        let known = match status.as_str() {
            "400" => "Invalid request: the message names what is wrong",
            "404" => "`not_found`: no such thing for this tenant",
            "409" => "`conflict`: contradicts stored data (a name taken, a stale version, still in use)",
            _ => continue,
        };
        if response.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
            response["description"] = Value::String(known.to_owned());
        }
    }
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| error(description));
    };
    let ops = matches!(path, "/health" | "/api/openapi.json");
    let quota_write = QUOTA_WRITES.contains(&(method, path));
    if secured && !quota_write {
        add(
            "403",
            "`insufficient_scope`: the credential lacks the scope in this route's `security`; `tenant_mismatch`: \
             `X-Tenant-Id` names another tenant than the credential's; `host_not_allowed`: without \
             authentication, the `Host` is not a loopback name",
        );
    }
    if secured {
        add(
            "401",
            "`unauthenticated`: no credential, or one that is malformed, unknown, expired or revoked; \
                    see `WWW-Authenticate`",
        );
        add(
            "429",
            "`rate_limited`: with authentication on, past a `limits.*` budget of the credential or the tenant; \
             retry after `Retry-After` (the `RateLimit` headers say the budget)",
        );
    }
    if has_body || has_params {
        add("400", "Invalid request: the message names what is wrong (`invalid_request`, `malformed_json`)");
    }
    if quota_write {
        add(
            "403",
            "`quota_exceeded`: the write would take the tenant past a storage quota (`limits.quota.*`, or the \
             operator's override); the body's `quota` names it with its `limit`, the `usage` and what the write \
             `requested`, and nothing was stored. Also `insufficient_scope`, `tenant_mismatch`, `host_not_allowed`, \
             `forbidden` (a credential bound to another resource)",
        );
        add(
            "413",
            "`quota_exceeded`: this write alone is larger than the tenant's storage quota (see `quota`); \
             `payload_too_large`: the body is larger than `server.body_limit_bytes`",
        );
    }
    if has_body {
        add("413", "The body is larger than `server.body_limit_bytes` (`payload_too_large`)");
        add("415", "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)");
    }
    if !ops {
        let write = !matches!(method, "get" | "head");
        add(
            "503",
            if write {
                "`unavailable`: the store is unreachable or busy, retry later; `timeout`: the write took too long and \
                 may or may not have been applied (retry with the same `Idempotency-Key`); `overloaded`: shed \
                 before it started (nothing was written); all with `Retry-After`"
            } else {
                "`unavailable`: the store is unreachable or busy; `timeout`: took too long; `overloaded`: shed before \
                 it started. Retry later (`Retry-After`)"
            },
        );
        add("500", "`internal`: an unexpected failure; the body says nothing more (see the server log)");
    }
}
