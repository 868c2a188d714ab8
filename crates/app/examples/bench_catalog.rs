//! Catalog read cache benchmark (library level, no HTTP), on the
//! embedded libSQL file.
//!
//! ```text
//! cargo run --release -p memlayer-app --example bench_catalog            # full run
//! cargo run --release -p memlayer-app --example bench_catalog -- --quick # smoke run
//! ```
//!
//! Looks up one agent (with three tools) by id, 20,000 times straight from
//! the store (every read a SQL query on a pooled reader) and 20,000 times
//! through the `CatalogService` cache after one warming read; prints the
//! median and mean of each and their ratio. Fails when the cached lookup is
//! not at least 20× faster.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_app::{CacheSettings, CatalogService};
use memlayer_domain::{AgentName, MemoryOptions, NewAgent, NewModel, NewTool, TenantId};
use memlayer_ports::{CatalogStore, Database as _};
use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / u32::try_from(v.len()).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 1_000 } else { 20_000 };
    let dir = tempfile::tempdir().unwrap();
    // The libSQL backend itself: `open_database` hands out only its
    // `Database` port now that it opens Postgres too.
    let backend =
        Arc::new(LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("memlayer.db"))).await.unwrap());
    let store: Arc<dyn CatalogStore> = backend.clone();
    let service = CatalogService::new(store.clone(), CacheSettings::default());
    println!("{}; {n} lookups each", backend.describe());

    let t = TenantId::parse("bench").unwrap();
    let model = NewModel {
        name: "gpt-4o".into(),
        provider: "openai".into(),
        context_window: 128_000,
        max_output_tokens: 16_384,
        input_price: 2.5,
        output_price: 10.0,
        is_default: true,
    };
    let model = service.create_model(&t, model).await.unwrap();
    let mut tools = Vec::new();
    for name in ["search", "lookup_order", "refund"] {
        let tool = NewTool {
            name: name.into(),
            description: format!("the {name} tool"),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
        };
        tools.push(service.create_tool(&t, tool).await.unwrap().id);
    }
    let agent = NewAgent {
        name: AgentName::parse("support").unwrap(),
        model_id: model.id,
        system_prompt: "You are a helpful support agent. ".repeat(20),
        tool_ids: tools,
        memory: MemoryOptions {
            last_n: Some(20),
            top_k: Some(5),
            token_budget: Some(8_000),
            working_memory: None,
            context: None,
        },
        runner: None,
    };
    let agent = service.create_agent(&t, agent).await.unwrap();

    // Warm both paths (connections, statement caches, the cache entry).
    for _ in 0..100 {
        assert_eq!(store.get_agent(&t, agent.id).await.unwrap(), agent);
        assert_eq!(service.get_agent(&t, agent.id).await.unwrap(), agent);
    }

    let mut uncached = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let got = store.get_agent(&t, agent.id).await.unwrap();
        uncached.push(start.elapsed());
        assert_eq!(got.id, agent.id);
    }
    let mut cached = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let got = service.get_agent(&t, agent.id).await.unwrap();
        cached.push(start.elapsed());
        assert_eq!(got.id, agent.id);
    }
    let (um, cm) = (median(uncached.clone()), median(cached.clone()));
    let (ua, ca) = (mean(&uncached), mean(&cached));
    let ratio = um.as_secs_f64() / cm.as_secs_f64();
    println!("uncached agent lookup (store): median {um:?}, mean {ua:?}");
    println!("cached agent lookup (service): median {cm:?}, mean {ca:?}");
    println!("speed-up (median): {ratio:.1}x; (mean): {:.1}x", ua.as_secs_f64() / ca.as_secs_f64());
    assert!(ratio >= 20.0, "cached lookup is only {ratio:.1}x faster (target: at least 20x)");
}
