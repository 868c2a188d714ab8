//! Postgres-specific behaviour: migrations down and up, atomic bulk appends
//! through binary COPY, and pooled connections left without session state.

use memlayer_adapters_postgres::testing::{fresh_database, pooled_setting};
use memlayer_adapters_postgres::{HnswConfig, PgConfig, PgVectorIndex};
use memlayer_domain::{
    Embedding, MAX_BATCH, NewMessage, NewSummary, NewThread, PageSize, ResourceId, Role, SettingName, TenantId,
    ThreadId, WorkingContent, WorkingScope,
};
use memlayer_ports::{
    CatalogStore, Claim, Database, EmbeddingStore, Fingerprint, IdempotencyKey, IdempotencyStore, KeyStore,
    MessageStore, MigrationStatus, ObservabilityStore, RetentionStore, SearchFilter, StateStore, StoreError,
    SummaryQueue, SummaryStore, ThreadStore, UsageStore, VectorIndex, WorkingMemoryStore,
};

fn msgs(n: usize) -> Vec<NewMessage> {
    (0..n).map(|i| NewMessage::text(Role::User, format!("message {i}")).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_down_and_up_again() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    store.append(&t, thread, msgs(3)).await.unwrap();
    let (cat, key) = (SettingName::category("ui").unwrap(), SettingName::key("theme").unwrap());
    store.put_setting(&t, &cat, &key, serde_json::json!("dark")).await.unwrap();
    let versions = |list: Vec<MigrationStatus>| list.iter().map(|m| m.version).collect::<Vec<_>>();
    // Reverting migration 9 removes the threads still marked deleted, whole,
    // or they would come back to life: below, only the live thread's three
    // jobs are left.
    let doomed = store.create(&t, NewThread::default()).await.unwrap().id;
    store.append(&t, doomed, msgs(2)).await.unwrap();
    ThreadStore::delete(&store, &t, doomed).await.unwrap();
    let now = memlayer_domain::now();
    let later = now + time::Duration::hours(1);
    assert_eq!(store.claim_jobs(now, 1, later).await.unwrap().len(), 1);
    // Reverting migration 10 drops the API keys, with the lookup function.
    let api_key = memlayer_domain::ApiKey {
        id: memlayer_domain::KeyId::parse("0123456789abcdef").unwrap(),
        tenant: t.clone(),
        name: None,
        scopes: memlayer_domain::Scopes::ALL,
        resource: None,
        created_at: now,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.create_key(&api_key, &[1; 32]).await.unwrap();
    let policy = memlayer_domain::NewRetentionPolicy {
        rules: memlayer_domain::RetentionRules { max_thread_age_secs: Some(60), ..Default::default() },
        ..Default::default()
    };
    let policy = store.create_policy(&t, policy).await.unwrap();
    // Reverting migration 26 puts span events back in their own table
    // (obs_migration_26_moves_events_both_ways checks the rows).
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![26]);
    // Reverting migration 25 drops the agent state history (a save, which
    // writes it, fails) and working-memory versions' seqs; states stay.
    let agent = memlayer_domain::AgentName::parse("bot").unwrap();
    StateStore::save(&store, &t, thread, &agent, serde_json::json!({"step": 1}), 0).await.unwrap();
    let user = WorkingScope::Resource(ResourceId::parse("user-1").unwrap());
    store.put_working(&t, &user, WorkingContent::Markdown("notes".into()), 0, 10).await.unwrap();
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![25]);
    assert!(
        matches!(
            StateStore::save(&store, &t, thread, &agent, serde_json::json!({}), 1).await,
            Err(StoreError::Backend(_))
        ),
        "the history table is gone"
    );
    assert_eq!(StateStore::load(&store, &t, thread, &agent).await.unwrap().unwrap().version, 1, "the state stays");
    // Reverting migration 22 drops the deletion log and its triggers.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![22]);
    let extra = store.append(&t, thread, msgs(1)).await.unwrap();
    MessageStore::delete(&store, &t, extra[0].id).await.unwrap();
    // Reverting migration 21 drops the observability tables, with their rows.
    let run = memlayer_domain::observability::NewEvalRun {
        name: None,
        model: Some("m".into()),
        agent: None,
        dataset: "d".into(),
        at: now,
        metrics: Default::default(),
        examples: vec![],
        metadata: Default::default(),
    };
    let run = ObservabilityStore::create_eval_run(&store, &t, run).await.unwrap();
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![21]);
    assert!(
        matches!(ObservabilityStore::get_eval_run(&store, &t, run.id).await, Err(StoreError::Backend(_))),
        "tables gone"
    );
    // Reverting migration 20 unstems the full text (the_stemming_migration_rebuilds_the_documents).
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![20]);
    // Reverting migration 19 drops the workflows, their steps and events.
    let wf = memlayer_domain::NewWorkflow {
        resource: None,
        name: "w".into(),
        description: String::new(),
        metadata: memlayer_domain::Metadata::default(),
        steps: Vec::new(),
    };
    let wf = memlayer_ports::WorkflowStore::create_workflow(&store, &t, wf).await.unwrap().workflow.id;
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![19]);
    assert!(
        matches!(memlayer_ports::WorkflowStore::workflow(&store, &t, wf).await, Err(StoreError::Backend(_))),
        "tables gone"
    );
    // Reverting migration 18 drops agents' runners.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![18]);
    // Reverting migration 17 drops the retention policies, receipts and lease.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![17]);
    assert!(matches!(store.get_policy(&t, policy.id).await, Err(StoreError::Backend(_))), "table gone");
    // Reverting migration 16 drops the resource policies of working memory and summaries.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![16]);
    // Reverting migration 15 drops the per-encoding token counts.
    let stored = store.append(&t, thread, msgs(1)).await.unwrap();
    store.save_token_counts(&t, "o200k_base", vec![(stored[0].id, 4)]).await.unwrap();
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![15]);
    assert!(matches!(store.token_counts(&t, "o200k_base", vec![stored[0].id]).await, Err(StoreError::Backend(_))));
    // Reverting migration 14 drops the summaries and their jobs.
    let summary = NewSummary { text: "s".into(), covers_through: 3, newly_covered: 3, summarizer: "t".into() };
    store.save_summary(&t, thread, summary, 0).await.unwrap();
    store.enqueue_summary(&t, thread, now).await.unwrap();
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![14]);
    assert!(matches!(store.current_summary(&t, thread).await, Err(StoreError::Backend(_))), "table gone");
    // Reverting migration 13 drops working memory (written before 25 was
    // reverted, whose column a write needs), with the agents' options.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![13]);
    assert!(matches!(store.get_working(&t, &user).await, Err(StoreError::Backend(_))), "tables gone");
    // Reverting migration 12 drops the resource policies; 11, the storage counters.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![12]);
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![11]);
    assert!(matches!(store.usage(&t).await, Err(StoreError::Backend(_))), "counters gone");
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![10]);
    assert!(matches!(store.find_key(&api_key.id).await, Err(StoreError::Backend(_))), "table and function gone");
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![9]);
    // Reverting migration 8 restores migration 2's full-text function.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![8]);
    // Reverting migration 7 drops the leases; the jobs stay.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![7]);
    assert!(store.claim_jobs(now, 1, later).await.is_err(), "lease column gone");
    // Reverting migration 6 drops the idempotency records.
    let (k, fp) = (IdempotencyKey::parse("k").unwrap(), Fingerprint::new([7; 32]));
    assert_eq!(store.claim(&t, &k, fp, now, later).await.unwrap(), Claim::New);
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![6]);
    assert!(matches!(store.claim(&t, &k, fp, now, later).await, Err(StoreError::Backend(_))), "table gone");
    // Reverting migration 4 drops the catalog tables, with their rows.
    assert_eq!(versions(store.migrate_down(1).await.unwrap()), vec![4]);
    assert!(matches!(store.get_setting(&t, &cat, &key).await, Err(StoreError::Backend(_))), "config tables gone");
    assert_eq!(
        versions(store.migrate_up().await.unwrap()),
        vec![4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 25, 26]
    );
    assert!(
        matches!(ObservabilityStore::get_eval_run(&store, &t, run.id).await, Err(StoreError::NotFound { .. })),
        "re-applied empty"
    );
    assert!(store.list_policies(&t).await.unwrap().is_empty(), "re-applied empty");
    assert_eq!(store.get_working(&t, &user).await.unwrap(), None, "re-applied empty");
    assert_eq!(store.current_summary(&t, thread).await.unwrap(), None, "re-applied empty");
    assert_eq!(store.find_key(&api_key.id).await.unwrap(), None, "re-applied empty");
    assert_eq!(store.due_jobs(now, 10).await.unwrap().len(), 3, "jobs kept, the lease gone with the column");
    assert_eq!(store.get_setting(&t, &cat, &key).await.unwrap(), None, "re-applied empty");
    assert_eq!(store.claim(&t, &k, fp, now, later).await.unwrap(), Claim::New, "re-applied empty");
    assert!(memlayer_ports::WorkflowStore::workflow(&store, &t, wf).await.is_err(), "re-applied empty");
    let down = store.migrate_down(21).await.unwrap();
    assert_eq!(versions(down), vec![26, 25, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 4, 2]);
    let status = store.migration_status().await.unwrap();
    let applied: Vec<_> = status.iter().map(|m| m.applied_at.is_some()).collect();
    assert_eq!(applied, {
        let mut only_first = vec![false; status.len()];
        only_first[0] = true;
        only_first
    });
    // Messages survive reverting migration 2; re-applying it schedules them.
    let up = store.migrate_up().await.unwrap();
    assert_eq!(versions(up), vec![2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 25, 26]);
    let due = store.due_jobs(memlayer_domain::now() + time::Duration::seconds(1), 100).await.unwrap();
    assert_eq!(due.len(), 4, "backfilled jobs");
    let all_down = store.migrate_down(22).await.unwrap();
    assert_eq!(
        versions(all_down),
        vec![26, 25, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 4, 2, 1]
    );
    assert!(store.migration_status().await.unwrap().iter().all(|m| m.applied_at.is_none()));
    assert!(matches!(ThreadStore::get(&store, &t, thread).await, Err(StoreError::Backend(_))), "tables are gone");
    assert_eq!(store.migrate_up().await.unwrap().len(), 22);
    assert!(store.list(&t, &Default::default(), None, PageSize::new(10).unwrap()).await.unwrap().items.is_empty());
}

/// Migration 20 computes every stored document again: rows written before
/// it (unstemmed) are found by other forms of their words after it, and
/// reverting it finds them by the words as written only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stemming_migration_rebuilds_the_documents() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    let whole = SearchFilter::all_threads(t.clone());
    let found = |q: &'static str| {
        let (store, whole) = (store.clone(), whole.clone());
        async move {
            let hits = store.lexical_search(&whole, q.into(), 5).await.unwrap();
            hits.iter().map(|h| h.id).collect::<Vec<_>>()
        }
    };
    // Reverts the newer migrations too, down to and including 20.
    while versions(store.migrate_down(1).await.unwrap()) != vec![20] {}
    let text = |s: &str| NewMessage::text(Role::User, s).unwrap();
    let old =
        store.append(&t, thread, vec![text("She runs every morning"), text("the dogs walked home")]).await.unwrap();
    // (Raw SQL: the adapter's search names migration 20's query function.)
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("SET memlayer.tenant = '*'").await.unwrap();
    let unstemmed =
        client.query("SELECT id FROM messages WHERE document @@ to_tsquery('simple', 'running')", &[]).await.unwrap();
    assert!(unstemmed.is_empty(), "stored unstemmed");
    assert_eq!(versions(store.migrate_up().await.unwrap())[0], 20);
    assert_eq!(found("running").await, vec![old[0].id]);
    assert_eq!(found("walking dog").await, vec![old[1].id]);
    let new = store.append(&t, thread, vec![text("Their invoices arrived")]).await.unwrap();
    assert_eq!(found("invoice").await, vec![new[0].id]);
    // Reverts the newer migrations too, down to and including 20.
    while versions(store.migrate_down(1).await.unwrap()) != vec![20] {}
    let as_written = client
        .query("SELECT id FROM messages WHERE document @@ to_tsquery('simple', 'runs | invoices')", &[])
        .await
        .unwrap();
    assert_eq!(as_written.len(), 2, "documents computed again, unstemmed");
    assert_eq!(versions(store.migrate_up().await.unwrap())[0], 20);
}

fn versions(list: Vec<MigrationStatus>) -> Vec<i64> {
    list.iter().map(|m| m.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bulk_append_stores_nothing() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    store.append(&t, thread, msgs(MAX_BATCH)).await.unwrap();
    // Postgres JSONB cannot hold NUL: the COPY fails at the last row. (The
    // domain refuses NUL in metadata a caller gives, `Metadata::from_value`;
    // `from_stored` skips that rule, so the store's own refusal is tested.)
    let mut batch = msgs(MAX_BATCH - 1);
    let metadata =
        memlayer_domain::Metadata::from_stored("metadata", serde_json::json!({"note": "bad \u{0} byte"})).unwrap();
    batch.push(NewMessage::new(Role::User, "fine", None, None, Vec::new(), metadata).unwrap());
    let err = store.append(&t, thread, batch).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert_eq!(ThreadStore::get(&store, &t, thread).await.unwrap().last_seq, MAX_BATCH as i64, "sequence untouched");
    let last = store.last(&t, thread, PageSize::new(5).unwrap()).await.unwrap();
    assert_eq!(last.last().unwrap().seq, MAX_BATCH as i64);
    let due = store.due_jobs(memlayer_domain::now(), 10_000).await.unwrap();
    assert_eq!(due.len(), MAX_BATCH, "no job for the rejected batch");
    let next = store.append(&t, thread, msgs(2)).await.unwrap();
    assert_eq!(next[0].seq, MAX_BATCH as i64 + 1, "no gap after the failed append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_keep_no_session_state() {
    let Some(db) = fresh_database().await else { return };
    let store = memlayer_adapters_postgres::PgBackend::open(PgConfig { pool_size: 1, ..PgConfig::new(db.url.clone()) })
        .await
        .unwrap();
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    let index =
        PgVectorIndex::open(store.clone(), 2, HnswConfig { exact_below: 0, ef_search: 123, ..Default::default() })
            .await
            .unwrap();
    let e = Embedding::new("m", vec![0.6, 0.8], 2).unwrap();
    index
        .upsert(vec![memlayer_ports::VectorEntry {
            id: memlayer_domain::MessageId::new(),
            tenant: t.clone(),
            thread,
            embedding: e.clone(),
        }])
        .await
        .unwrap();
    let filter = SearchFilter::these_threads(t.clone(), vec![thread, ThreadId::new()]);
    assert_eq!(index.search(&filter, &e, 5).await.unwrap().matches.len(), 1);
    for (name, default) in
        [("memlayer.tenant", ""), ("memlayer.resource", ""), ("hnsw.ef_search", "40"), ("hnsw.iterative_scan", "off")]
    {
        let value = pooled_setting(&store, name).await.unwrap_or_default();
        assert_eq!(value, default, "{name} leaked into the pooled connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_malformed_urls_say_what_is_wrong() {
    let refused =
        memlayer_adapters_postgres::PgBackend::open(PgConfig::new("postgres://memlayer@127.0.0.1:1/memlayer"))
            .await
            .unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("127.0.0.1:1") && text.contains("memlayer"), "names the server: {text}");
    let malformed =
        memlayer_adapters_postgres::PgBackend::open(PgConfig::new("postgres://h:port/db")).await.unwrap_err();
    assert!(matches!(malformed, StoreError::Invalid(_)), "{malformed}");
    let Some(db) = fresh_database().await else { return };
    let wrong_db = memlayer_adapters_postgres::testing::with_database(&db.url, "no_such_database");
    let err = memlayer_adapters_postgres::PgBackend::open(PgConfig::new(wrong_db)).await.unwrap_err();
    assert!(err.to_string().contains("no_such_database"), "{err}");
}

/// Two servers on one database: claims from two pools at once never hand
/// the same job to both, lose none, and an unfinished job is handed out
/// again once its lease has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_share_the_queue_through_leases() {
    let Some(db) = fresh_database().await else { return };
    let (one, two) = (db.backend().await, db.backend().await);
    let mut all = std::collections::BTreeSet::new();
    for name in ["a", "b", "c"] {
        let t = TenantId::parse(name).unwrap();
        let thread = one.create(&t, NewThread::default()).await.unwrap().id;
        all.extend(one.append(&t, thread, msgs(400)).await.unwrap().into_iter().map(|m| m.id));
    }
    let now = memlayer_domain::now();
    let lease = now + time::Duration::minutes(5);
    let worker = |store: memlayer_adapters_postgres::PgBackend| async move {
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_jobs(now, 16, lease).await.unwrap();
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|j| j.id));
        }
    };
    let (a, b, c, d) = tokio::join!(worker(one.clone()), worker(two.clone()), worker(one.clone()), worker(two.clone()));
    let claims: Vec<_> = [a, b, c, d].concat();
    let handed: std::collections::BTreeSet<_> = claims.iter().copied().collect();
    assert_eq!(handed.len(), claims.len(), "a job was handed to two workers");
    assert_eq!(handed, all, "every job handed out once");
    // The first worker finishes half its jobs and dies with the rest.
    let done: Vec<_> =
        claims.iter().take(600).map(|id| (*id, Embedding::new("m", vec![0.6, 0.8], 2).unwrap())).collect();
    assert_eq!(one.complete_jobs(done).await.unwrap().len(), 600);
    assert!(two.claim_jobs(now + time::Duration::minutes(4), 100, lease).await.unwrap().is_empty(), "still leased");
    let after = lease + time::Duration::seconds(1);
    let back: std::collections::BTreeSet<_> = two
        .claim_jobs(after, 10_000, after + time::Duration::minutes(5))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(back, claims[600..].iter().copied().collect(), "unfinished jobs come back after the lease");
}

/// Transactions commit in any order: a deletion numbered first but
/// committed after a later-numbered one is still read, by a reader whose
/// cursor already passed the later number. A cursor of numbers alone
/// would miss it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deletion_log_misses_no_transaction_that_commits_late() {
    use memlayer_ports::{DeletionCursor, DeletionLog};
    use tokio_postgres::NoTls;

    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let t = TenantId::parse("acme").unwrap();
    let thread = store.create(&t, NewThread::default()).await.unwrap().id;
    let stored = store.append(&t, thread, msgs(2)).await.unwrap();
    let cursor = store.deletion_cursor().await.unwrap();
    // Transaction A deletes the first message, its entry numbered first,
    // and stays open.
    let (late, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    late.batch_execute("BEGIN; SELECT set_config('memlayer.tenant', 'acme', true)").await.unwrap();
    late.execute("DELETE FROM messages WHERE id = $1", &[&stored[0].id.as_uuid()]).await.unwrap();
    // B deletes the second and commits first.
    MessageStore::delete(&store, &t, stored[1].id).await.unwrap();
    let first = store.deletions_since(&cursor, 10).await.unwrap();
    let got: Vec<_> = first.items.iter().map(|d| d.message).collect();
    assert_eq!(got, vec![Some(stored[1].id)], "only what is committed");
    assert!(!first.next.pending.is_empty(), "A is in progress");
    late.batch_execute("COMMIT").await.unwrap();
    let second = store.deletions_since(&first.next, 10).await.unwrap();
    let got: Vec<_> = second.items.iter().map(|d| d.message).collect();
    assert_eq!(got, vec![Some(stored[0].id)], "A's entry, numbered below the cursor");
    let by_number = DeletionCursor { seq: first.next.seq, pending: Vec::new() };
    assert!(store.deletions_since(&by_number, 10).await.unwrap().items.is_empty(), "numbers alone miss it");
    let third = store.deletions_since(&second.next, 10).await.unwrap();
    assert!(third.items.is_empty(), "read once A has ended: {third:?}");
}
