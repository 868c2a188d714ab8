//! Tenant isolation enforced by Postgres itself: row-level security on every
//! table, keyed on the transaction's `memlayer.tenant`, for a role that
//! cannot bypass it.

use memlayer_adapters_postgres::testing::{TestDatabase, fresh_database};
use memlayer_domain::{AgentId, Embedding, NewMessage, NewThread, Role, TenantId};
use memlayer_ports::{EmbeddingStore, MessageStore, StateStore, ThreadStore};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

async fn raw(db: &TestDatabase) -> Client {
    let (client, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Tenants of every row of `table` visible with `memlayer.tenant` = `tenant`
/// (`None`: not set), read by a raw query without any tenant filter.
async fn visible(client: &mut Client, tenant: Option<&str>, table: &str) -> Vec<String> {
    let tx = client.transaction().await.unwrap();
    if let Some(t) = tenant {
        tx.execute("SELECT set_config('memlayer.tenant', $1, true)", &[&t]).await.unwrap();
    }
    let rows = tx.query(&format!("SELECT tenant FROM {table}"), &[]).await.unwrap();
    tx.commit().await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_tenant_filter_sees_only_its_tenant() {
    let Some(db) = fresh_database().await else { return };
    let store = db.backend().await;
    let (a, b) = (TenantId::parse("tenant-a").unwrap(), TenantId::parse("tenant-b").unwrap());
    for t in [&a, &b] {
        let thread = ThreadStore::create(&store, t, NewThread::default()).await.unwrap().id;
        let stored = store
            .append(
                t,
                thread,
                vec![NewMessage::text(Role::User, "secret").unwrap(), NewMessage::text(Role::User, "x").unwrap()],
            )
            .await
            .unwrap();
        store.save(t, thread, &AgentId::parse("agent").unwrap(), json!({"k": 1}), 0).await.unwrap();
        let e = Embedding::new("m", vec![1.0, 0.0], 2).unwrap();
        store.complete_jobs(vec![(stored[0].id, e)]).await.unwrap();
    }
    let mut client = raw(&db).await;
    let role = client
        .query_one("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap();
    assert_eq!((role.get::<_, bool>(0), role.get::<_, bool>(1)), (false, false), "the test role must not bypass RLS");
    for table in ["threads", "messages", "agent_state", "message_vectors", "embedding_jobs"] {
        let seen = visible(&mut client, Some("tenant-a"), table).await;
        assert!(!seen.is_empty(), "{table}: tenant-a sees its own rows");
        assert!(seen.iter().all(|t| t == "tenant-a"), "{table}: tenant-a saw {seen:?}");
        assert!(visible(&mut client, None, table).await.is_empty(), "{table}: no tenant set, nothing visible");
        assert!(visible(&mut client, Some("nobody"), table).await.is_empty(), "{table}: unknown tenant sees nothing");
    }
    // Writing a row of another tenant is refused by the policy's check.
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT set_config('memlayer.tenant', 'tenant-a', true)", &[]).await.unwrap();
    let err = tx
        .execute(
            "INSERT INTO threads (id, tenant, created_at, updated_at) VALUES (gen_random_uuid(), 'tenant-b', now(), now())",
            &[],
        )
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert!(db.message().contains("row-level security"), "{db:?}");
    drop(tx);
    // The setting is transaction-local: the connection is clean afterwards.
    let after: Option<String> =
        client.query_one("SELECT nullif(current_setting('memlayer.tenant', true), '')", &[]).await.unwrap().get(0);
    assert_eq!(after, None);
}
