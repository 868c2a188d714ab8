//! Query-plan checks: every hot query is an index search, never a scan or a sort.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use libsql::Value;
use memlayer_adapters_sql::Dialect;
use memlayer_domain::{AgentName, Direction, MetadataFilter, ResourceId, TenantId, ThreadFilter, ThreadId};
use serde_json::json;

use crate::{LibsqlBackend, LibsqlConfig};

async fn plan(backend: &LibsqlBackend, sql: String, params: Vec<Value>) -> String {
    backend
        .read(move |conn| async move {
            let mut rows = conn.query(&format!("EXPLAIN QUERY PLAN {sql}"), params).await.unwrap();
            let mut lines = Vec::new();
            while let Some(row) = rows.next().await.unwrap() {
                lines.push(format!("{:?}", row.get_value(3).unwrap()));
            }
            Ok(lines.join("\n"))
        })
        .await
        .unwrap()
}

fn check(plan: &str, index: &str) {
    assert!(!plan.contains("TEMP B-TREE"), "sorts:\n{plan}");
    assert!(!plan.contains("SCAN "), "scans:\n{plan}");
    assert!(plan.contains(index), "does not use {index}:\n{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_queries_use_indexes() {
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let t = TenantId::parse("t").unwrap();
    for direction in [Direction::Forward, Direction::Backward] {
        let sql = memlayer_adapters_sql::messages::page_sql(Dialect::Sqlite, &t, ThreadId::new(), direction, 0, 10);
        let (sql, params) = crate::exec::params(sql).unwrap();
        let p = plan(&backend, sql, params).await;
        println!("{p}");
        check(&p, "messages_thread_seq");
    }

    let tenant = TenantId::parse("acme").unwrap();
    let resource = Some(ResourceId::parse("u1").unwrap());
    let agent = Some(AgentName::parse("a1").unwrap());
    let meta = vec![MetadataFilter::new("lang", json!("en")).unwrap()];
    let cases = [
        (ThreadFilter::default(), "threads_tenant_id"),
        (ThreadFilter { resource_id: resource.clone(), ..ThreadFilter::default() }, "threads_tenant_resource_id"),
        (ThreadFilter { agent_id: agent, ..ThreadFilter::default() }, "threads_tenant_agent_id"),
        (ThreadFilter { metadata: meta, ..ThreadFilter::default() }, "threads_tenant_id"),
    ];
    for (filter, index) in cases {
        for after in [None, Some(ThreadId::new())] {
            let sql = memlayer_adapters_sql::threads::list_sql(
                memlayer_adapters_sql::Dialect::Sqlite,
                memlayer_adapters_sql::threads::THREAD_COLUMNS,
                &tenant,
                &filter,
                after,
                10,
            );
            let (sql, params) = crate::exec::params(sql).unwrap();
            let p = plan(&backend, sql, params).await;
            println!("{p}");
            check(&p, index);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_queries_use_indexes() {
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let p = plan(
        &backend,
        crate::embeddings::SCAN_VECTORS.to_owned(),
        vec![Value::Text("m".into()), Value::Integer(0), Value::Integer(10)],
    )
    .await;
    println!("{p}");
    check(&p, "message_vectors_model");

    // Due jobs: a skip scan for the tenants and a range search per tenant
    // (migration 7); the only scans are of those small intermediate results,
    // never of a table.
    let p = plan(&backend, crate::embeddings::DUE_JOBS.to_owned(), vec![Value::Integer(0), Value::Integer(10)]).await;
    println!("{p}");
    assert!(p.contains("embedding_jobs_tenant_due (tenant=? AND next_attempt_at<?)"), "{p}");
    assert!(p.contains("embedding_jobs_tenant_due (tenant>?)"), "tenants by a skip scan:\n{p}");
    let scanned: Vec<&str> = p.lines().filter_map(|l| l.split("SCAN ").nth(1)).collect();
    for table in scanned {
        let table = table.trim_end_matches(['"', ')']);
        assert!(
            ["tenants", "r", "CONSTANT ROW"].contains(&table) || table.starts_with("(subquery"),
            "scans {table}:\n{p}"
        );
    }
}

/// The sweep of deleted threads: the next mark from the partial index, a
/// chunk of its messages by a range search (migration 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_queries_use_indexes() {
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let p = plan(&backend, crate::threads::NEXT_MARKED.to_owned(), Vec::new()).await;
    println!("{p}");
    check(&p, "threads_deleted");
    let thread = Value::Blob(ThreadId::new().as_uuid().as_bytes().to_vec());
    let p = plan(&backend, crate::threads::SWEEP_MESSAGES.to_owned(), vec![thread, Value::Integer(10)]).await;
    println!("{p}");
    assert!(p.contains("messages_thread_seq (thread_id=?)"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "sorts:\n{p}");
}

/// The API key statements: a lookup and a batch of last uses by the primary
/// key, a listing by `api_keys_tenant` in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_queries_use_indexes() {
    use memlayer_adapters_sql::keys;
    use memlayer_domain::KeyId;

    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let id = KeyId::parse("0123456789abcdef").unwrap();
    let other = KeyId::parse("00000000000000ff").unwrap();
    let now = memlayer_domain::now();
    let first = memlayer_ports::KeyListing { resource: None, after: None, limit: 100 };
    let later = memlayer_ports::KeyListing {
        resource: Some(memlayer_domain::ResourceId::parse("u1").unwrap()),
        after: Some(other.clone()),
        limit: 100,
    };
    for (sql, index) in [
        (keys::find_sql(Dialect::Sqlite, &id), "sqlite_autoindex_api_keys_1"),
        (keys::list_sql(Dialect::Sqlite, &TenantId::parse("acme").unwrap(), &first), "api_keys_tenant"),
        (keys::list_sql(Dialect::Sqlite, &TenantId::parse("acme").unwrap(), &later), "api_keys_tenant"),
        (keys::uses_sql(Dialect::Sqlite, &[(&id, now), (&other, now)]), "sqlite_autoindex_api_keys_1"),
    ] {
        let (sql, params) = crate::exec::params(sql).unwrap();
        let p = plan(&backend, sql, params).await;
        println!("{p}");
        // The batch's own VALUES list is scanned, never the table.
        assert!(!p.contains("SCAN api_keys") && !p.contains("TEMP B-TREE"), "{p}");
        assert!(p.contains(index), "does not use {index}:\n{p}");
    }
}

/// Working memory (migration 13): the current document by its primary key
/// (through its thread for a thread's), the kept versions by a backwards
/// range of theirs, the old ones deleted by a range, a deleted thread's by
/// the partial `thread_id` indexes; so a read costs the same whatever the
/// number of versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_memory_queries_use_indexes() {
    use memlayer_adapters_sql::working;
    use memlayer_domain::WorkingScope;

    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let t = TenantId::parse("acme").unwrap();
    for scope in [WorkingScope::Resource(ResourceId::parse("u1").unwrap()), WorkingScope::Thread(ThreadId::new())] {
        for (sql, index) in [
            (
                working::current_sql(Dialect::Sqlite, &t, &scope),
                "USING PRIMARY KEY (tenant=? AND scope_kind=? AND scope_id=?)",
            ),
            (working::versions_sql(Dialect::Sqlite, &t, &scope, 10), "working_memory_versions USING PRIMARY KEY"),
            (working::prune_sql(Dialect::Sqlite, &t, &scope, 5), "scope_id=? AND version<?)"),
        ] {
            let (sql, params) = crate::exec::params(sql).unwrap();
            let p = plan(&backend, sql, params).await;
            println!("{p}");
            check(&p, index);
        }
    }
    let thread = Value::Blob(ThreadId::new().as_uuid().as_bytes().to_vec());
    for (sql, index) in
        crate::threads::SWEEP_WORKING.into_iter().zip(["working_memory_thread", "working_memory_versions_thread"])
    {
        let p = plan(&backend, sql.to_owned(), vec![thread.clone()]).await;
        println!("{p}");
        check(&p, index);
    }
}

/// Agent state's history (migration 25): a save's upsert and trim, the
/// sweep's delete and a fork's read as of a seq are primary-key searches,
/// so they cost the same whatever the thread's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_state_history_queries_use_its_key() {
    use memlayer_adapters_sql::{state, threads};

    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let (t, agent) = (TenantId::parse("acme").unwrap(), AgentName::parse("a1").unwrap());
    let (source, at) = (ThreadId::new(), memlayer_domain::now());
    let fork = memlayer_adapters_sql::threads::created(&t, memlayer_domain::NewThread::default(), at);
    for (sql, index) in [
        (state::prune_history_sql(Dialect::Sqlite, source, &agent, 10), "agent_state_history USING PRIMARY KEY"),
        (
            threads::fork_states_sql(Dialect::Sqlite, true, &t, source, &fork, false, at),
            "SEARCH m USING PRIMARY KEY (thread_id=? AND agent_id=? AND at_seq<?)",
        ),
        (
            threads::fork_working_sql(Dialect::Sqlite, false, &t, source, &fork, false, at),
            "SEARCH w USING PRIMARY KEY (tenant=? AND scope_kind=? AND scope_id=?)",
        ),
    ] {
        let (sql, params) = crate::exec::params(sql).unwrap();
        let p = plan(&backend, sql, params).await;
        println!("{p}");
        check(&p, index);
    }
    let thread = Value::Blob(source.as_uuid().as_bytes().to_vec());
    let p = plan(&backend, crate::threads::SWEEP_STATE[1].to_owned(), vec![thread]).await;
    println!("{p}");
    check(&p, "agent_state_history USING PRIMARY KEY (thread_id=?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_queries_use_indexes() {
    use memlayer_adapters_sql::summaries;

    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    for (sql, index) in [
        // The backlog after a summary: a range of one thread's messages.
        (summaries::backlog_sql(Dialect::Sqlite, ThreadId::new(), 7), "messages_thread_seq"),
        // The newest versions, read backwards along the version index.
        (summaries::newest(Dialect::Sqlite, ThreadId::new(), 1), "thread_summaries_version"),
    ] {
        let (sql, params) = crate::exec::params(sql).unwrap();
        let p = plan(&backend, sql, params).await;
        println!("{p}");
        check(&p, index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_count_queries_start_from_the_ids() {
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let t = TenantId::parse("t").unwrap();
    let ids = [memlayer_domain::MessageId::new(), memlayer_domain::MessageId::new()];
    let read = memlayer_adapters_sql::token_counts::read_sql(Dialect::Sqlite, &t, "o200k_base", &ids);
    let (sql, params) = crate::exec::params(read).unwrap();
    let p = plan(&backend, sql, params).await;
    println!("{p}");
    // Counts by primary key, then each message by id and its thread by key:
    // the cost follows the ids asked for, not the thread's length.
    assert!(!p.contains("SCAN ") && !p.contains("TEMP B-TREE"), "{p}");
    assert!(p.contains("messages_id") && !p.contains("messages_thread_seq"), "{p}");
    let write =
        memlayer_adapters_sql::token_counts::write_sql(Dialect::Sqlite, &t, "o200k_base", &[(ids[0], 1), (ids[1], 2)]);
    let (sql, params) = crate::exec::params(write).unwrap();
    let p = plan(&backend, sql, params).await;
    println!("{p}");
    assert!(p.contains("messages_id") && !p.contains("messages_thread_seq") && !p.contains("SCAN m"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_queries_use_indexes() {
    use memlayer_adapters_sql::observability::{
        list_traces_sql, model_calls_sql, purge_deletes_sql, purge_victims_sql, scan_window_sql,
    };
    use memlayer_domain::TraceId;
    use memlayer_domain::observability::{PerfQuery, StatusCode, TraceQuery, TraceSort};

    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let t = TenantId::parse("acme").unwrap();
    let base = TraceQuery { limit: 50, ..TraceQuery::default() };
    let after = Some((5, TraceId::parse_hex("id", &"ab".repeat(16)).unwrap()));
    let cases = [
        (base.clone(), "obs_traces_start"),
        (
            TraceQuery { sort: TraceSort::StartAsc, from_ns: Some(1), to_ns: Some(9), ..base.clone() },
            "obs_traces_start",
        ),
        (TraceQuery { min_duration_ns: Some(5), ..base.clone() }, "obs_traces_start"),
        (TraceQuery { model: Some("m".into()), min_duration_ns: Some(5), ..base.clone() }, "obs_traces_model"),
        (
            TraceQuery { sort: TraceSort::DurationAsc, min_duration_ns: Some(5), from_ns: Some(1), ..base.clone() },
            "obs_traces_duration",
        ),
        (TraceQuery { sort: TraceSort::DurationDesc, model: Some("m".into()), ..base.clone() }, "obs_traces_duration"),
        (TraceQuery { sort: TraceSort::DurationDesc, ..base.clone() }, "obs_traces_duration"),
        (TraceQuery { model: Some("gpt-4o".into()), ..base.clone() }, "obs_traces_model"),
        (TraceQuery { agent: Some("support".into()), ..base.clone() }, "obs_traces_agent"),
        (TraceQuery { service: Some("bot".into()), ..base.clone() }, "obs_traces_start"),
        (TraceQuery { status: Some(StatusCode::Error), ..base.clone() }, "obs_traces_errors"),
        (TraceQuery { status: Some(StatusCode::Ok), ..base.clone() }, "obs_traces_start"),
        (TraceQuery { status: Some(StatusCode::Error), model: Some("m".into()), ..base.clone() }, "obs_traces_model"),
        (
            TraceQuery { status: Some(StatusCode::Error), sort: TraceSort::DurationDesc, ..base.clone() },
            "obs_traces_duration",
        ),
        (TraceQuery { text: Some("needle".into()), ..base.clone() }, "obs_traces_start"),
    ];
    for (query, index) in cases {
        for after in [None, after] {
            let q = TraceQuery { after, ..query.clone() };
            let (sql, params) = crate::exec::params(list_traces_sql(Dialect::Sqlite, &t, &q)).unwrap();
            let p = plan(&backend, sql, params).await;
            println!("{q:?}\n{p}");
            check(&p, index);
        }
    }
    // The window of a filter no index serves: the walked index alone.
    for q in [
        TraceQuery { text: Some("x".into()), ..base.clone() },
        TraceQuery { text: Some("x".into()), model: Some("m".into()), ..base.clone() },
        TraceQuery { service: Some("bot".into()), status: Some(StatusCode::Unset), ..base.clone() },
        TraceQuery { service: Some("bot".into()), status: Some(StatusCode::Error), ..base.clone() },
    ] {
        let (sql, params) = crate::exec::params(scan_window_sql(Dialect::Sqlite, &t, &q)).unwrap();
        let p = plan(&backend, sql, params).await;
        println!("{p}");
        check(&p, "COVERING INDEX obs_traces_");
    }
    // Model calls: the partial covering index alone, then each call's trace by key.
    let calls = PerfQuery {
        from_ns: 0,
        to_ns: 10,
        bucket_ns: 1,
        model: Some("m".into()),
        agent: Some("a".into()),
        operation: None,
        max_calls: 10,
    };
    let (sql, params) = crate::exec::params(model_calls_sql(Dialect::Sqlite, &t, &calls)).unwrap();
    let p = plan(&backend, sql, params).await;
    println!("{p}");
    check(&p, "COVERING INDEX obs_spans_calls");
    // Retention: each tenant's traces through its start index, one index
    // step per tenant; their rows by key.
    let (sql, params) = crate::exec::params(purge_victims_sql(Dialect::Sqlite, 5, 10)).unwrap();
    let p = plan(&backend, sql, params).await;
    println!("{p}");
    assert!(p.contains("SEARCH x USING INDEX obs_traces_start (tenant=? AND start_ns<?)"), "{p}");
    assert!(
        p.contains("SEARCH o USING COVERING INDEX") && p.contains("(tenant>?)") && !p.contains("TEMP B-TREE"),
        "{p}"
    );
    let ids = [uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2)];
    for (table, sql) in purge_deletes_sql(Dialect::Sqlite, "acme", &ids) {
        let (sql, params) = crate::exec::params(sql).unwrap();
        let p = plan(&backend, sql, params).await;
        println!("{table}:\n{p}");
        assert!(p.contains("USING PRIMARY KEY") || p.contains("autoindex"), "{table} by key:\n{p}");
    }
}

/// A search's pending count reads only its own tenant's part of the job
/// queue, however long another tenant's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_count_reads_only_its_tenants_jobs() {
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let filter = memlayer_ports::SearchFilter::these_threads(TenantId::parse("acme").unwrap(), vec![ThreadId::new()]);
    let cond = crate::filter_sql::filter_sql(&filter, "t.tenant", "m.thread_id", 2).unwrap();
    let mut params = vec![Value::Text("m".into())];
    params.extend(cond.params);
    let p = plan(&backend, crate::embeddings::coverage_sql(&cond.sql), params).await;
    println!("{p}");
    assert!(
        p.contains("embedding_jobs_tenant_due (tenant=?)") && !p.contains("SCAN j ") && !p.contains("SCAN j\""),
        "{p}"
    );
}

/// What a search of the in-process index reads instead of waiting for the
/// feed starts from rowids (the range above the index's position, or the
/// few positions left out), never from the searched thread's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_text_delta_reads_by_rowid() {
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
    let filter = memlayer_ports::SearchFilter::these_threads(TenantId::parse("acme").unwrap(), vec![ThreadId::new()]);
    let cond = crate::filter_sql::filter_sql(&filter, "t.tenant", "+m.thread_id", 6).unwrap();
    let mut params =
        vec![Value::Text("acme".into()), Value::Integer(0), Value::Integer(0), Value::Integer(10), Value::Integer(9)];
    params.extend(cond.params);
    let p = plan(&backend, crate::embeddings::delta_sql(&cond.sql), params).await;
    println!("{p}");
    // (The one temporary B-tree is the view's, ordering a message's tool
    // calls.)
    assert!(!p.contains("SCAN m\"") && !p.contains("SCAN messages") && !p.contains("FOR ORDER BY"), "{p}");
    assert!(p.contains("SEARCH messages USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"), "{p}");
    assert!(p.contains("SEARCH messages USING INTEGER PRIMARY KEY (rowid=?)"), "{p}");
}
