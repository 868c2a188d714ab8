#![allow(clippy::unwrap_used)]
use std::time::Instant;
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bytes = std::fs::read("/work/main/target/bench-data/vectors101k.f32").unwrap();
    let rows: Vec<&[u8]> = bytes.chunks_exact(1536).take(20000).collect();
    let q: Vec<u8> = bytes.chunks_exact(1536).last().unwrap().to_vec();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let db = libsql::Builder::new_local(&path).build().await.unwrap();
    let c = db.connect().unwrap();
    c.query("PRAGMA journal_mode=WAL", ()).await.unwrap();
    c.execute_batch("CREATE TABLE v (rowid INTEGER PRIMARY KEY, id BLOB, tenant TEXT, thread BLOB, model TEXT, e F32_BLOB(384)); CREATE INDEX v_s ON v(tenant, thread, model);").await.unwrap();
    let tx = c.transaction().await.unwrap();
    for (i, r) in rows.iter().enumerate() {
        tx.execute("INSERT INTO v (id, tenant, thread, model, e) VALUES (?1, 'bench', ?2, 'bench', ?3)", vec![libsql::Value::Blob(vec![i as u8; 16]), libsql::Value::Blob(vec![(i % 100) as u8; 16]), libsql::Value::Blob(r.to_vec())]).await.unwrap();
    }
    tx.commit().await.unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").await.unwrap();
    for setup in ["", "PRAGMA cache_size=-131072;", "PRAGMA mmap_size=1073741824;"] {
        let r = db.connect().unwrap();
        if !setup.is_empty() { r.execute_batch(setup).await.unwrap(); }
        for (name, sql) in [
            ("sql-exact", "SELECT id, thread, e FROM v WHERE tenant = 'bench' AND model = 'bench' ORDER BY vector_distance_cos(e, vector32(?1)) LIMIT 10"),
            ("read-all", "SELECT e FROM v WHERE tenant = 'bench' AND model = 'bench'"),
            ("sql-exact-noidx", "SELECT id, thread, e FROM v NOT INDEXED WHERE tenant = 'bench' AND model = 'bench' ORDER BY vector_distance_cos(e, vector32(?1)) LIMIT 10"),
        ] {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let mut rs = r.query(sql, if sql.contains("?1") { vec![libsql::Value::Blob(q.clone())] } else { vec![] }).await.unwrap();
                let mut n = 0;
                while let Some(_row) = rs.next().await.unwrap() { n += 1; }
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
                let _ = n;
            }
            println!("{setup:32} {name:16} best {best:.1} ms");
        }
    }
}
