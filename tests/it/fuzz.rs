//! schemathesis against the real `memlayer` binary: every route and method
//! of `/api/openapi.json`, with checks that the document tells the truth.
//!
//! Checks: no 5xx (`not_a_server_error`), every status and body as
//! documented (`status_code_conformance`, `response_schema_conformance`,
//! `content_type_conformance`), and no request that follows the document
//! rejected (`positive_data_acceptance`: a schema-valid request must not get
//! a 400, 413, 415 or 422).
//!
//! A few rules JSON Schema cannot state are in the document's prose only, and
//! the run pins the values they concern (see [`config`]): cursors (opaque
//! tokens of earlier responses), list filters (a grammar over the entity's
//! fields), `max_output_tokens <= context_window` of a model, an agent's
//! references to a stored model and tools, an agent's working-memory
//! options (its JSON Schema must compile, and a document of a thread of that
//! agent must satisfy it and be of its format: so fuzzed agents get none,
//! and working memory is fuzzed under the defaults), a tool's `required`
//! naming its `properties`, and the `agent` a resource's working memory
//! names (it must be in the catalog), the model an append counts tokens
//! with (`count_tokens` needs one when the thread has none), a retention policy's "at least
//! one rule" and "`only_summarized` only with `max_messages_per_thread`"
//! (pinned to a thread-age rule), and an evaluation comparison's "exactly one
//! of `ids` and `dataset`" (a 400 is allowed there). Everything else is
//! generated, OTLP/JSON bodies of `POST /v1/traces` included.
//!
//! The server runs with `auth.mode = api_key`, and every request carries a
//! key holding every scope of the `default` tenant (made with `memlayer keys
//! create` before the server starts; `X-Tenant-Id` is pinned to that
//! tenant): without it schemathesis generates a random bearer token for each
//! operation the document secures, and those operations would only ever be
//! answered 401.
//!
//! The run is deterministic: a fixed seed, a bounded number of examples per
//! operation, one worker. `MEMLAYER_FUZZ_EXAMPLES` and `MEMLAYER_FUZZ_SEED`
//! make a longer or different run (see docs/ARCHITECTURE.md, "Fuzzing").
//! schemathesis comes from `scripts/provision` (`$MEMLAYER_CACHE_DIR/fuzz`,
//! or `MEMLAYER_SCHEMATHESIS` names an `st` binary). Missing, the test
//! prints a `SKIP` line; with `CI` set it fails instead.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// Examples per operation in the CI run: about a minute on two cores.
const CI_EXAMPLES: &str = "25";
/// The CI run's seed.
const CI_SEED: &str = "20261129";

/// The checks; each is a promise of the document.
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,\
                      content_type_conformance,positive_data_acceptance";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn schemathesis() -> Option<PathBuf> {
    if let Some(st) = std::env::var_os("MEMLAYER_SCHEMATHESIS").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(st));
    }
    let st = memlayer_app::default_cache_dir().join("fuzz").join("bin").join("st");
    st.is_file().then_some(st)
}

/// A key with every scope of the `default` tenant, made by the CLI in `dir`.
fn create_key(dir: &std::path::Path) -> String {
    let out = Command::new(crate::support::BIN)
        .args(["keys", "create", "--tenant", "default", "--scopes", "read,write,admin", "--name", "fuzz"])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("LIBSQL_DATABASE_URL")
        .env_remove("DATABASE_URL")
        // The run's own settings are not the binary's configuration.
        .env_remove("MEMLAYER_FUZZ_EXAMPLES")
        .env_remove("MEMLAYER_FUZZ_SEED")
        .env_remove("MEMLAYER_SCHEMATHESIS")
        .env("RUST_LOG", "error")
        .output()
        .expect("memlayer keys create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    created["key"].as_str().unwrap().to_owned()
}

fn start(dir: &std::path::Path) -> (Server, String) {
    let (child, base) = crate::support::spawn_server(
        dir,
        // A loaded CI machine must not turn a slow request into a 503.
        &[
            ("RUST_LOG", "error"),
            ("MEMLAYER_SERVER__REQUEST_TIMEOUT_SECS", "300"),
            ("MEMLAYER_AUTH__MODE", "api_key"),
            // The run is about the document, not the limiter (tests/it/rate.rs):
            // budgets far above what one worker sends, so a 429 (documented)
            // does not stand in for the handlers.
            ("MEMLAYER_LIMITS__CREDENTIAL__PER_SECOND", "100000"),
            ("MEMLAYER_LIMITS__CREDENTIAL__BURST", "100000"),
            ("MEMLAYER_LIMITS__TENANT__PER_SECOND", "100000"),
            ("MEMLAYER_LIMITS__TENANT__BURST", "100000"),
        ],
        &["MEMLAYER_FUZZ_EXAMPLES", "MEMLAYER_FUZZ_SEED", "MEMLAYER_SCHEMATHESIS"],
        Duration::from_secs(60),
    );
    (Server(child), base)
}

/// schemathesis' configuration: values pinned where the document's rule is
/// prose (see the module doc). Body pins are not applied by the coverage
/// phase, so it skips those few operations; the fuzzing phase covers them.
/// What a schema-valid request may get on the routes that take an
/// `Idempotency-Key`: schemathesis' defaults plus 422, the documented answer
/// to a key it generated again for another request (a 422 is never a
/// validation error here: those are 400).
const KEYED: &str = r#"["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]"#;

/// A fork's keyed answers, and 400: whether a schema-valid `at_seq` lies
/// beyond the thread depends on what the thread holds, which the document
/// can say only in prose.
const FORK: &str = r#"["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]"#;
/// What a schema-valid context request may get: the defaults plus 422, the
/// documented answer when the thread's state cannot meet the request (a
/// budget below its agent's system prompt, or no budget given and none
/// known for its model); those depend on stored data, not on the request's
/// shape, so the document cannot state them as a schema.
const CONTEXT: &str = r#"["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]"#;
/// What a schema-valid export may get: the defaults plus 400: its
/// `resource_id` and `thread_id` follow the id rules the other routes state
/// in prose.
const TRANSFER: &str = r#"["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]"#;

/// An evaluation comparison: the defaults plus 400, the answer when both or
/// neither of `ids` and `dataset` are given (a rule the document states in
/// prose: JSON Schema cannot require exactly one of two query parameters).
const COMPARE: &str = r#"["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]"#;

/// Working-memory PATCH and restore: the keyed answers plus 412, the
/// answer to an `If-Match` naming a version the document is not at (which
/// depends on what is stored, not on the request's shape).
const IF_MATCH: &str = r#"["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]"#;
/// A workflow's steps: the defaults plus 400, for the rules the document
/// states in prose (step names unique within the workflow, `depends_on`
/// naming its steps without a cycle, a `$ref` naming a step it depends on,
/// a `url` only for an `http` runner, at least one step to execute).
const WORKFLOW: &str = r#"["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]"#;

fn config(model_id: &str, tool_id: &str) -> String {
    format!(
        r#"
[parameters]
"query.cursor" = ""
"query.filter" = "name:ne:~"
"query.agent" = "fuzz-agent"
"header.X-Tenant-Id" = "default"

[[operations]]
include-operation-id = ["create_model", "update_model"]
parameters = {{ "body.max_output_tokens" = 1 }}
phases.coverage.enabled = false
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["create_agent", "update_agent"]
parameters = {{ "body.model_id" = "{model_id}", "body.tool_ids" = ["{tool_id}"], "header.X-Tenant-Id" = "default", "body.memory" = {{ last_n = 20, top_k = 5 }} }}
phases.coverage.enabled = false
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["create_tool", "update_tool"]
parameters = {{ "body.parameters" = {{ type = "object", properties = {{ q = {{ type = "string" }} }}, required = ["q"] }} }}
phases.coverage.enabled = false
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["create_thread", "summarize", "prune"]
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["append_messages"]
parameters = {{ "query.model" = "gpt-4o" }}
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["restore_resource_working", "restore_thread_working", "patch_resource_working", "patch_thread_working"]
checks.positive_data_acceptance.expected-statuses = {IF_MATCH}

[[operations]]
include-operation-id = ["fork_thread"]
checks.positive_data_acceptance.expected-statuses = {FORK}

[[operations]]
include-operation-id = ["create_policy", "replace_policy"]
parameters = {{ "body.max_thread_age_secs" = 3600, "body.only_summarized" = false }}
phases.coverage.enabled = false
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["assemble_context"]
checks.positive_data_acceptance.expected-statuses = {CONTEXT}

[[operations]]
include-operation-id = ["export"]
checks.positive_data_acceptance.expected-statuses = {TRANSFER}

[[operations]]
include-operation-id = ["create_evaluation"]
checks.positive_data_acceptance.expected-statuses = {KEYED}

[[operations]]
include-operation-id = ["compare_evaluations"]
checks.positive_data_acceptance.expected-statuses = {COMPARE}

# schemathesis has no serializer for `application/x-ndjson` bodies; imports
# are tested in tests/it/transfer.rs.
[[operations]]
include-operation-id = ["import"]
enabled = false

[[operations]]
include-operation-id = ["create_workflow", "add_steps", "execute", "pause", "resume", "cancel", "retry_step"]
checks.positive_data_acceptance.expected-statuses = {WORKFLOW}
"#
    )
}

/// Creates a model and a tool for agents to refer to, and `fuzz-agent`
/// (without working-memory options: any document it is named for is
/// acceptable), the agent a resource's working-memory routes name; returns
/// the model's and the tool's ids.
async fn seed_references(base: &str, key: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (path, body) in [
        (
            "models",
            serde_json::json!({"name": "fuzz-model", "provider": "fuzz", "context_window": 8192, "max_output_tokens": 1024}),
        ),
        ("tools", serde_json::json!({"name": "fuzz_tool", "parameters": {"type": "object"}})),
    ] {
        let r = http.post(format!("{base}/api/{path}")).bearer_auth(key).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "seeding {path}");
        let v: serde_json::Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let agent = serde_json::json!({"name": "fuzz-agent", "model_id": ids[0]});
    let r = http.post(format!("{base}/api/agents")).bearer_auth(key).json(&agent).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "seeding the agent");
    (ids[0].clone(), ids[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_document_truthful() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is required in CI: run scripts/provision (it installs $MEMLAYER_CACHE_DIR/fuzz/bin/st)"
        );
        eprintln!("SKIP schemathesis_finds_the_document_truthful: schemathesis not installed (run scripts/provision)");
        return;
    };
    if !crate::support::model_ready("schemathesis_finds_the_document_truthful") {
        return;
    }
    let examples = std::env::var("MEMLAYER_FUZZ_EXAMPLES").unwrap_or_else(|_| CI_EXAMPLES.to_owned());
    let seed = std::env::var("MEMLAYER_FUZZ_SEED").unwrap_or_else(|_| CI_SEED.to_owned());
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path());
    let (_server, base) = start(dir.path());
    let (model, tool) = seed_references(&base, &key).await;
    let config_file = dir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config(&model, &tool)).unwrap();
    let report = dir.path().join("schemathesis");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{base}/api/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--phases", "examples,coverage,fuzzing", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color", "--request-timeout", "330"])
        .arg("--report-dir")
        .arg(&report)
        // No user or project configuration changes what CI runs.
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("SCHEMATHESIS_HOOKS")
        .output()
        .expect("schemathesis runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("schemathesis (seed {seed}, {examples} examples per operation):\n{text}");
    assert!(out.status.success(), "schemathesis found the document untruthful (seed {seed}); see its output above");
    // "N generated, N passed": it ran, and every case passed every check.
    let counts = text
        .lines()
        .find_map(|l| {
            let (generated, rest) = l.trim().split_once(" generated, ")?;
            Some((generated.parse::<u64>().ok()?, rest.strip_suffix(" passed")?.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no `N generated, N passed` line in schemathesis' output"));
    assert!(counts.0 > 0 && counts.0 == counts.1, "every generated case passes: {counts:?}");
}
