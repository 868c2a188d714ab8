//! The official OpenTelemetry Python SDK and its OTLP/HTTP exporter
//! (`opentelemetry-exporter-otlp-proto-http`, pinned by `scripts/provision`
//! in `$MEMLAYER_CACHE_DIR/otel`) export spans to the real `memlayer`
//! binary, with an API key and gzip; the spans read back through the API.
//! Without that venv the test prints `SKIP`; with `CI` set it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{BIN, Server, spawn_server};

fn python() -> Option<PathBuf> {
    let py = memlayer_app::default_cache_dir().join("otel").join("bin").join("python");
    py.is_file().then_some(py)
}

fn create_key(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["keys", "create", "--tenant", "acme", "--scopes", "read,write", "--name", "otel"])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMLAYER_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("LIBSQL_DATABASE_URL")
        .env("RUST_LOG", "error")
        .output()
        .expect("memlayer keys create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    created["key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_to_memlayer() {
    let Some(py) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the OpenTelemetry Python exporter is required in CI: run scripts/provision (it installs $MEMLAYER_CACHE_DIR/otel)"
        );
        eprintln!("SKIP the_python_sdk_exports_to_memlayer: $MEMLAYER_CACHE_DIR/otel missing (run scripts/provision)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path());
    let (child, base) = spawn_server(
        dir.path(),
        &[("RUST_LOG", "error"), ("MEMLAYER_AUTH__MODE", "api_key"), ("MEMLAYER_EMBEDDING__ENABLED", "false")],
        &[],
        Duration::from_secs(60),
    );
    let _server = Server { child, base: base.clone() };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/otlp_export.py");
    let http = reqwest::Client::new();
    for gzip in [true, false] {
        let mut cmd = Command::new(&py);
        cmd.arg(script)
            .args(["--endpoint", &format!("{base}/v1/traces")])
            .args(["--header", &format!("authorization=Bearer {key}")])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS");
        if gzip {
            cmd.arg("--gzip");
        }
        let out = cmd.output().expect("the exporter script runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "export failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(report["results"], serde_json::json!(["SUCCESS"]), "{report}");
        let trace = report["trace_id"].as_str().unwrap();

        let get = |path: String| {
            let (http, key) = (http.clone(), key.clone());
            async move {
                let r = http.get(path).bearer_auth(key).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                r.json::<Value>().await.unwrap()
            }
        };
        let detail = get(format!("{base}/api/observability/traces/{trace}")).await;
        let t = &detail["trace"];
        assert_eq!(
            (&t["name"], &t["service"], &t["span_count"]),
            (&"invoke_agent support".into(), &"python-agent".into(), &3.into())
        );
        assert_eq!((&t["status"], &t["model"], &t["agent"]), (&"error".into(), &"gpt-4o".into(), &"support".into()));
        assert_eq!((&t["input_tokens"], &t["output_tokens"]), (&120.into(), &45.into()));
        let spans = detail["spans"].as_array().unwrap();
        let names: Vec<(&str, u64)> =
            spans.iter().map(|s| (s["name"].as_str().unwrap(), s["depth"].as_u64().unwrap())).collect();
        assert_eq!(names, [("invoke_agent support", 0), ("chat gpt-4o", 1), ("execute_tool lookup_order", 1)]);
        for s in spans {
            assert_eq!(s["span_id"], report["spans"][s["name"].as_str().unwrap()], "span ids as the SDK made them");
        }
        let chat = &spans[1];
        assert_eq!((&chat["kind"], &chat["scope"]["name"]), (&"client".into(), &"memlayer.test".into()));
        assert_eq!(chat["attributes"]["gen_ai.request.stop_sequences"], serde_json::json!(["\n\n", "END"]));
        assert_eq!(chat["attributes"]["gen_ai.request.temperature"], 0.2);
        assert!(chat["attributes"]["prompt.large"].as_str().unwrap().ends_with("…[truncated 1808 bytes]"));
        assert_eq!(chat["events"][0]["name"], "gen_ai.choice");
        assert_eq!(chat["gen_ai"]["input_tokens"], 120);
        let tool = &spans[2];
        assert_eq!((&tool["status"]["code"], &tool["status"]["message"]), (&"error".into(), &"order not found".into()));
        assert_eq!(tool["events"][0]["name"], "exception");
        assert_eq!(spans[0]["resource"]["telemetry.sdk.language"], "python");
        let perf = get(format!("{base}/api/observability/performance?model=gpt-4o")).await;
        assert!(perf["series"][0]["total"]["calls"].as_u64().unwrap() >= 1, "{perf}");
    }
}
