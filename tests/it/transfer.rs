//! Exports and imports over HTTP and the command line: the round trip
//! libSQL → file → Postgres → file → libSQL gives the same file (only the
//! header's `exported_at` differs), a second import changes nothing, and
//! each kind of bad input is a 4xx naming the line and field with nothing
//! of the thread concerned imported.

use std::process::Command;

use axum::http::StatusCode;
use memlayer_domain::{Embedding, MessageId};
use serde_json::{Value, json};

use crate::support::{BIN, Store, TestApp, assert_error};

const NDJSON: &str = "application/x-ndjson";

async fn export(t: &TestApp, query: &str) -> String {
    let (status, body) = t.call_with("GET", &format!("/api/export{query}"), &[], None, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    match body {
        Value::String(s) => s,
        // A one-line export parses as JSON.
        other => format!("{other}\n"),
    }
}

async fn import(t: &TestApp, body: &str) -> (StatusCode, Value) {
    t.call_with("POST", "/api/import", &[("content-type", NDJSON)], Some(body.to_owned()), false).await
}

/// The lines of an export without its volatile field (the header's
/// `exported_at`), parsed.
fn stable(file: &str) -> Vec<Value> {
    file.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if v["type"] == "header" {
                v.as_object_mut().unwrap().remove("exported_at");
            }
            v
        })
        .collect()
}

/// A tenant with a catalog, two threads (messages with tool calls, token
/// counts and metadata, an agent state, working memory, vectors of the
/// store's model for some messages) and a resource's working memory.
async fn populate(t: &TestApp) {
    let (status, model) = t
        .call(
            "POST",
            "/api/models",
            Some(json!({"name": "gpt-4o", "provider": "openai", "context_window": 128000,
            "max_output_tokens": 4096, "input_price": 2.5, "output_price": 10.0})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    let (status, tool) =
        t.call("POST", "/api/tools", Some(json!({"name": "lookup", "parameters": {"type": "object"}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{tool}");
    let agent =
        json!({"name": "support", "model_id": model["id"], "tool_ids": [tool["id"]], "system_prompt": "be kind"});
    let (status, agent) = t.call("POST", "/api/agents", Some(agent)).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, v) = t.call("PUT", "/api/settings/ui/theme", Some(json!({"value": {"dark": true}}))).await;
    assert!(status.is_success(), "{v}");

    let a = t
        .thread(json!({"resource_id": "u1", "agent_id": "support", "title": "Refund", "model": "gpt-4o",
        "metadata": {"lang": "en"}}))
        .await;
    let batch = json!({"messages": [
        {"role": "user", "content": "where is my refund", "metadata": {"k": 1}},
        {"role": "assistant", "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"order": "A-17"}}]},
        {"role": "tool", "tool_call_id": "c1", "tool_name": "lookup", "content": "sent monday"},
        {"role": "assistant", "content": "your zanzibarian refund was sent"}]});
    let (status, stored) = t.call("POST", &format!("/api/threads/{a}/messages?count_tokens=true"), Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let (status, v) = t
        .call(
            "PUT",
            &format!("/api/threads/{a}/state/support"),
            Some(json!({"state": {"step": 3}, "expected_version": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let doc = json!({"content": {"name": "Ada"}, "expected_version": 0});
    let (status, v) = t.call("PUT", &format!("/api/threads/{a}/working-memory"), Some(doc)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let doc = json!({"content": {"plan": "gold"}, "expected_version": 0});
    let (status, v) = t.call("PUT", "/api/resources/u1/working-memory?agent=support", Some(doc)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let b = t.thread(json!({"resource_id": "u2"})).await;
    let batch = json!({"messages": [{"role": "user", "content": "hello"}]});
    let (status, v) = t.call("POST", &format!("/api/threads/{b}/messages"), Some(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // Vectors of the store's model for two messages (no model is needed to
    // store them).
    let info = t.services.search.embedder_info();
    let messages = stored["items"].as_array().or(stored["messages"].as_array()).unwrap();
    let vector = |seed: f32| {
        let mut v: Vec<f32> = (0..info.dim).map(|i| ((i as f32) * 0.37 + seed).sin()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        Embedding::new(info.model.clone(), v, info.dim).unwrap()
    };
    let done: Vec<(MessageId, Embedding)> = messages[..2]
        .iter()
        .enumerate()
        .map(|(i, m)| (m["id"].as_str().unwrap().parse().unwrap(), vector(i as f32)))
        .collect();
    t.services.embeddings.complete_jobs(done).await.unwrap();
}

/// An import report's threads and messages created, vectors stored and
/// embeddings queued.
fn imported(report: &Value) -> (&Value, &Value, &Value, &Value) {
    (&report["threads_created"], &report["messages_created"], &report["vectors_stored"], &report["embeddings_queued"])
}

async fn round_trip() {
    let Some(pg) = TestApp::on(Store::Postgres, |_| {}).await else { return };
    // A summariser (a fake chat server) so that a summary goes along too.
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let source = crate::summary::app_with_chat(Store::Libsql, healthy).await.unwrap();
    populate(&source).await;
    let (_, threads) = source.call("GET", "/api/threads?resource_id=u1", None).await;
    let refund = threads["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, v) = source.call("POST", &format!("/api/threads/{refund}/summary"), None).await;
    assert_eq!((status, &v["advanced"]), (StatusCode::OK, &json!(true)), "{v}");
    let first = export(&source, "?vectors=true").await;
    let lines = stable(&first);
    let count = |kind: &str| lines.iter().filter(|l| l["type"] == kind).count();
    assert_eq!(
        (count("header"), count("model"), count("tool"), count("agent"), count("setting"), count("thread")),
        (1, 1, 1, 1, 1, 2),
        "{first}"
    );
    assert_eq!(
        (count("message"), count("vector"), count("agent_state"), count("working_memory"), count("summary")),
        (5, 2, 1, 2, 1)
    );
    assert_eq!(lines.last().unwrap()["type"], "end");

    let (status, report) = import(&pg, &first).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(imported(&report), (&json!(2), &json!(5), &json!(2), &json!(3)), "{report}");
    let second = export(&pg, "?vectors=true").await;
    assert_eq!(stable(&second), lines, "libSQL → Postgres keeps every record");

    let back = TestApp::on(Store::Libsql, |_| {}).await.unwrap();
    let (status, report) = import(&back, &second).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let third = export(&back, "?vectors=true").await;
    assert_eq!(stable(&third), lines, "Postgres → libSQL keeps every record");

    // Importing again changes nothing.
    let (status, report) = import(&pg, &first).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            &report["threads_created"],
            &report["threads_unchanged"],
            &report["records_created"],
            &report["records_unchanged"]
        ),
        (&json!(0), &json!(2), &json!(0), &json!(5)),
        "{report}"
    );
    assert_eq!(stable(&export(&pg, "?vectors=true").await), lines);

    // Imported messages are found like appended ones.
    let (status, hits) =
        back.call("POST", "/api/search", Some(json!({"query": "zanzibarian", "mode": "lexical"}))).await;
    assert_eq!(status, StatusCode::OK, "{hits}");
    assert_eq!(hits["hits"].as_array().map(Vec::len), Some(1), "{hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_libsql_postgres_libsql_keeps_every_record() {
    round_trip().await;
}

/// Narrowed exports: a thread's (no catalog, no resource working memory)
/// and a resource's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_narrow_to_a_resource_or_a_thread() {
    let t = TestApp::new().await;
    populate(&t).await;
    let whole = stable(&export(&t, "").await);
    let thread = whole.iter().find(|l| l["type"] == "thread" && l["resource_id"] == "u2").unwrap()["id"].clone();
    let one = stable(&export(&t, &format!("?thread_id={}", thread.as_str().unwrap())).await);
    let kinds: Vec<_> = one.iter().map(|l| l["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, vec!["header", "thread", "message", "end"], "{one:?}");
    let of_u1 = stable(&export(&t, "?resource_id=u1").await);
    assert!(of_u1.iter().all(|l| l["type"] != "model"), "no catalog in a resource's export");
    assert_eq!(of_u1.iter().filter(|l| l["type"] == "thread").count(), 1);
    assert_eq!(of_u1.iter().filter(|l| l["type"] == "working_memory").count(), 2, "the resource's and its thread's");
    assert!(whole.iter().all(|l| l["type"] != "vector"), "vectors only when asked");
    let missing = t.call("GET", "/api/export?thread_id=0190f5c8-0000-7000-8000-000000000000", None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
}

/// Each kind of bad input: a 4xx naming the line and field, threads before
/// it imported, nothing of the thread it falls in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_imports_name_the_line_and_store_nothing_of_their_thread() {
    let source = TestApp::new().await;
    populate(&source).await;
    let file = export(&source, "").await;
    let lines: Vec<&str> = file.lines().collect();
    let n = lines.len();
    let first_thread = lines.iter().position(|l| l.contains(r#""type":"thread""#)).unwrap();
    let second_thread = lines.iter().rposition(|l| l.contains(r#""type":"thread""#)).unwrap();
    let join = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let thread_id = |i: usize| serde_json::from_str::<Value>(lines[i]).unwrap()["id"].as_str().unwrap().to_owned();
    let (first_id, second_id) = (thread_id(first_thread), thread_id(second_thread));

    let check = |got: &(StatusCode, Value), status: StatusCode, code: &str, line: usize, field: &str| {
        assert_error(got, status, code);
        assert_eq!((&got.1["error"]["line"], &got.1["error"]["field"]), (&json!(line), &json!(field)), "{}", got.1);
    };
    let exists =
        async |t: &TestApp, id: &str| t.call("GET", &format!("/api/threads/{id}"), None).await.0 == StatusCode::OK;

    // A future format version.
    let t = TestApp::new().await;
    let mut future = owned.clone();
    future[0] = future[0].replace(r#""version":1"#, r#""version":2"#);
    check(&import(&t, &join(&future)).await, StatusCode::BAD_REQUEST, "invalid_import", 1, "version");
    assert!(!exists(&t, &first_id).await);

    // Malformed JSON inside the second thread's block: the first thread is
    // imported, the second not.
    let mut broken = owned.clone();
    broken[second_thread + 1] = "{\"type\": \"message\",".into();
    let got = import(&t, &join(&broken)).await;
    check(&got, StatusCode::BAD_REQUEST, "invalid_import", second_thread + 2, "json");
    assert_eq!(got.1["error"]["imported"]["threads_created"], json!(1), "{}", got.1);
    assert!(exists(&t, &first_id).await && !exists(&t, &second_id).await);

    // A field of the wrong type names the field.
    let t = TestApp::new().await;
    let mut typed = owned.clone();
    typed[first_thread + 1] = typed[first_thread + 1].replacen(r#""seq":1"#, r#""seq":"one""#, 1);
    check(&import(&t, &join(&typed)).await, StatusCode::BAD_REQUEST, "invalid_import", first_thread + 2, "seq");
    assert!(!exists(&t, &first_id).await);

    // A truncated line (cut mid-record, no newline) and a file cut at a line
    // boundary (no end record): the last thread is not imported.
    let cut = &file[..file.len() - 1 - lines[n - 1].len() / 2];
    check(&import(&t, cut).await, StatusCode::BAD_REQUEST, "invalid_import", n, "json");
    assert!(exists(&t, &first_id).await, "the block before the cut is whole");
    assert!(!exists(&t, &second_id).await, "the last thread's block never ended: not imported");
    let t = TestApp::new().await;
    let short = join(&owned[..n - 1]);
    check(&import(&t, &short).await, StatusCode::BAD_REQUEST, "invalid_import", n, "end");
    assert!(exists(&t, &first_id).await && !exists(&t, &second_id).await, "the last thread waits for its block's end");

    // One message id twice in a thread's block, with other content: 400 on
    // the second line naming `id`, nothing of that thread imported.
    let t = TestApp::new().await;
    let mut twice = owned.clone();
    let clash = twice[first_thread + 1].replace("where is my refund", "where is my money");
    assert_ne!(clash, twice[first_thread + 1]);
    twice.insert(first_thread + 2, clash);
    let got = import(&t, &join(&twice)).await;
    check(&got, StatusCode::BAD_REQUEST, "invalid_import", first_thread + 3, "id");
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("line {}", first_thread + 2)), "names the first line: {}", got.1);
    assert!(!exists(&t, &first_id).await, "nothing of the thread");
    let (_, listed) = t.call("GET", "/api/threads", None).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0), "{listed}");

    // A record of another tenant.
    let t = TestApp::new().await;
    let mut foreign = owned.clone();
    foreign[second_thread] = foreign[second_thread].replace(r#""tenant":"default""#, r#""tenant":"globex""#);
    check(&import(&t, &join(&foreign)).await, StatusCode::BAD_REQUEST, "invalid_import", second_thread + 1, "tenant");
    assert!(!exists(&t, &second_id).await);

    // An id stored with other content: 409 naming the message's line and
    // field; nothing overwritten.
    let (status, v) = import(&t, &file).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut edited = owned.clone();
    let line = first_thread + 1;
    edited[line] = edited[line].replace("where is my refund", "where is my money");
    let got = import(&t, &join(&edited)).await;
    check(&got, StatusCode::CONFLICT, "import_conflict", line + 1, "content");
    assert_eq!(stable(&export(&t, "").await)[1..], stable(&file)[1..], "nothing changed");
}

/// A file whose vectors are of another embedding model than the store's:
/// the messages are imported, their vectors are not, and every message is
/// queued for the store's model instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_of_another_model_are_not_imported_but_embedded_again() {
    let source = TestApp::new().await;
    populate(&source).await;
    let model = source.services.search.embedder_info().model;
    let file = export(&source, "?vectors=true").await;
    let quoted = format!("\"{model}\"");
    let foreign = file.replace(&quoted, "\"another-model\"");
    let lines = stable(&foreign);
    let vectors: Vec<&Value> = lines.iter().filter(|l| l["type"] == "vector").collect();
    assert_eq!(vectors.len(), 2, "{foreign}");
    assert!(vectors.iter().all(|v| v["model"] == "another-model"), "{foreign}");
    assert_eq!(lines[0]["embedding"]["model"], "another-model", "the header names the file's model");

    let t = TestApp::new().await;
    let (status, report) = import(&t, &foreign).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(imported(&report), (&json!(2), &json!(5), &json!(0), &json!(5)), "{report}");
    let thread = lines.iter().find(|l| l["type"] == "thread" && l["resource_id"] == "u1").unwrap();
    let id = thread["id"].as_str().unwrap();
    let (status, progress) = t.call("GET", &format!("/api/threads/{id}/embeddings"), None).await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(
        (&progress["embedded"], &progress["pending"], &progress["other_model"]),
        (&json!(0), &json!(4), &json!(0)),
        "queued for the store's model, no vector of the file's kept: {progress}"
    );
    let exported = stable(&export(&t, "?vectors=true").await);
    assert!(exported.iter().all(|l| l["type"] != "vector"), "no vector of another model stored");
}

/// `memlayer export` and `memlayer import` on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_on_the_command_line() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    {
        let t = TestApp::on(Store::Libsql, |c| c.data_dir = from.path().to_path_buf()).await.unwrap();
        populate(&t).await;
    }
    let file = from.path().join("export.jsonl");
    let run = |args: &[&std::ffi::OsStr], dir: &std::path::Path| {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env_remove("MEMLAYER_CONFIG")
            .env_remove("LIBSQL_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .env("MEMLAYER_EMBEDDING__ENABLED", "false")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run(&["export".as_ref(), "--vectors".as_ref(), "--output".as_ref(), file.as_os_str()], from.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exported 2 threads, 5 messages, 2 vectors"), "{stderr}");
    let out = run(&["import".as_ref(), file.as_os_str()], to.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("imported 2 threads (0 already there), 5 messages"), "{stderr}");
    let again = run(&["import".as_ref(), file.as_os_str()], to.path());
    assert!(String::from_utf8_lossy(&again.stderr).contains("imported 0 threads (2 already there)"));
    let copy = to.path().join("copy.jsonl");
    let out = run(&["export".as_ref(), "--vectors".as_ref(), "-o".as_ref(), copy.as_os_str()], to.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (std::fs::read_to_string(&file).unwrap(), std::fs::read_to_string(&copy).unwrap());
    assert_eq!(stable(&a), stable(&b), "the command line round trip keeps every record");

    let broken = to.path().join("broken.jsonl");
    std::fs::write(&broken, &a[..a.len() - 5]).unwrap();
    let out = run(&["import".as_ref(), broken.as_os_str()], to.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("line {}: json: truncated", a.lines().count())), "{stderr}");
}

/// An import is held to the tenant's storage quota (nothing of the thread
/// past it stored) and charged to its embedding budget for what the worker
/// will embed (429 once spent, the thread stored; a re-import costs nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_count_against_the_quota_and_the_embedding_budget() {
    let source = TestApp::new().await;
    populate(&source).await;
    let file = export(&source, "").await;
    let lines: Vec<&str> = file.lines().collect();
    let first_thread = lines.iter().position(|l| l.contains(r#""type":"thread""#)).unwrap();
    let first_id = serde_json::from_str::<Value>(lines[first_thread]).unwrap()["id"].as_str().unwrap().to_owned();

    // Room for the first thread's four messages, not for the second's one.
    let second_thread = lines.iter().rposition(|l| l.contains(r#""type":"thread""#)).unwrap();
    let second_id = serde_json::from_str::<Value>(lines[second_thread]).unwrap()["id"].as_str().unwrap().to_owned();
    let t = TestApp::with(|c| c.limits.quota.messages = Some(4)).await;
    let got = import(&t, &file).await;
    assert_error(&got, StatusCode::FORBIDDEN, "quota_exceeded");
    assert_eq!(got.1["error"]["line"], json!(second_thread + 1), "{}", got.1);
    assert_eq!(t.call("GET", &format!("/api/threads/{first_id}"), None).await.0, StatusCode::OK);
    assert_eq!(t.call("GET", &format!("/api/threads/{second_id}"), None).await.0, StatusCode::NOT_FOUND);

    let t = TestApp::with(|c| {
        c.limits.enabled = Some(true);
        c.limits.credential = memlayer_app::Rate::UNLIMITED;
        c.limits.tenant = memlayer_app::Rate::UNLIMITED;
        c.limits.embed_tokens = memlayer_app::Rate { per_second: 0.01, burst: 10 };
    })
    .await;
    let got = import(&t, &file).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(got.1["error"]["line"], json!(first_thread + 1), "{}", got.1);
    assert_eq!(got.1["error"]["imported"]["threads_created"], json!(1), "the thread is stored, then charged");
    assert_eq!(t.call("GET", &format!("/api/threads/{first_id}"), None).await.0, StatusCode::OK);
}

/// Records an export, appending to each thread (and summarising past its
/// exported `last_seq`) as soon as the thread's record is written, as a
/// client would while a long export runs.
struct AppendingSink {
    services: memlayer_app::Services,
    tenant: memlayer_domain::TenantId,
    records: Vec<memlayer_app::Record>,
}

#[async_trait::async_trait]
impl memlayer_app::RecordSink for AppendingSink {
    async fn put(&mut self, record: memlayer_app::Record) -> Result<(), memlayer_ports::StoreError> {
        if let memlayer_app::Record::Thread(t) = &record {
            let late = vec![memlayer_domain::NewMessage::text(memlayer_domain::Role::User, "late").unwrap()];
            let options = memlayer_app::AppendOptions { count_tokens: Some(false), model: None };
            self.services.memory.append_messages(&self.tenant, t.id, late, options).await?;
        }
        self.records.push(record);
        Ok(())
    }
}

/// A thread appended to while it is being exported is exported as of its
/// record (no message past its `last_seq`), so the file imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_each_thread_as_of_its_record() {
    let t = TestApp::new().await;
    populate(&t).await;
    let tenant = memlayer_domain::TenantId::default_tenant();
    let mut sink = AppendingSink { services: t.services.clone(), tenant: tenant.clone(), records: Vec::new() };
    let options = memlayer_app::ExportOptions::default();
    t.services.transfer.export(&tenant, &options, &mut sink).await.unwrap();
    let mut last_seq = 0;
    let mut messages = 0;
    for r in &sink.records {
        match r {
            memlayer_app::Record::Thread(th) => last_seq = th.last_seq,
            memlayer_app::Record::Message(m) => {
                messages += 1;
                assert!(m.seq <= last_seq, "message {} past its thread's last_seq {last_seq}", m.seq);
            }
            _ => {}
        }
    }
    assert_eq!(messages, 5, "the late messages are not in the export");
    let mut file = Vec::new();
    for r in &sink.records {
        memlayer_api::transfer_routes::encode(r, &mut file).unwrap();
        file.push(b'\n');
    }
    let fresh = TestApp::new().await;
    let (status, report) = import(&fresh, std::str::from_utf8(&file).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["messages_created"], json!(5), "{report}");
}
