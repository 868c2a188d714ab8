//! The native (DiskANN) vector index: which path a search takes, exact
//! scores on both paths, the fallback when the graph comes up short.

use std::sync::Arc;

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig, LibsqlVectorIndex, NativeIndexConfig};
use memlayer_domain::{Embedding, MessageId, TenantId, ThreadId};
use memlayer_ports::{IndexKind, SearchFilter, StoreError, VectorEntry, VectorIndex};

use crate::common::{db_path, tenant};

const DIM: usize = 384;

/// Deterministic pseudo-random unit vectors around a few centres (xorshift).
fn vectors(seed: u64, n: usize) -> Vec<Vec<f32>> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..8).map(|_| (0..DIM).map(|_| next()).collect()).collect();
    (0..n)
        .map(|i| {
            let v: Vec<f32> = centres[i % 8].iter().map(|c| c + 0.3 * next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

async fn open(exact_below: usize) -> (LibsqlVectorIndex, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::file(db_path(&dir))).await.unwrap();
    let config = NativeIndexConfig { exact_below, ..NativeIndexConfig::default() };
    (LibsqlVectorIndex::open(backend, DIM, config).await.unwrap(), dir)
}

fn entries(t: &TenantId, threads: &[ThreadId], vs: &[Vec<f32>]) -> Vec<VectorEntry> {
    vs.iter()
        .enumerate()
        .map(|(i, v)| VectorEntry {
            id: MessageId::new(),
            tenant: t.clone(),
            thread: threads[i % threads.len()],
            embedding: Embedding::new("m", v.clone(), DIM).unwrap(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_return_true_cosine_scores() {
    let t = tenant("acme");
    let threads = [ThreadId::new(), ThreadId::new()];
    let data = vectors(5, 400);
    let stored = entries(&t, &threads, &data);
    let queries = vectors(99, 5);
    for (exact_below, strategy) in [(0, IndexKind::Libsql), (NativeIndexConfig::DEFAULT_EXACT_BELOW, IndexKind::Exact)]
    {
        let (index, _dir) = open(exact_below).await;
        assert_eq!(index.kind(), IndexKind::Libsql);
        index.upsert(stored.clone()).await.unwrap();
        for q in &queries {
            let query = Embedding::new("m", q.clone(), DIM).unwrap();
            let got = index.search(&SearchFilter::all_threads(t.clone()), &query, 10).await.unwrap();
            assert_eq!(got.strategy, strategy);
            assert_eq!(got.matches.len(), 10);
            let mut truth: Vec<(f64, MessageId)> =
                stored.iter().map(|e| (dot(e.embedding.vector(), q), e.id)).collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            for m in &got.matches {
                let e = stored.iter().find(|e| e.id == m.id).unwrap();
                let want = dot(e.embedding.vector(), q);
                assert!((f64::from(m.score) - want).abs() < 1e-5, "{strategy}: score {} vs dot {want}", m.score);
            }
            assert!(got.matches.windows(2).all(|p| p[0].score >= p[1].score));
            if strategy == IndexKind::Exact {
                let ids: Vec<_> = truth.iter().take(10).map(|x| x.1).collect();
                assert_eq!(got.matches.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_filter_still_finds_every_admitted_entry() {
    // One thread holds 1 in 50 entries: the over-fetch doubles, and when the
    // graph cannot yield enough the search falls back to an exact scan.
    let (index, _dir) = open(0).await;
    let t = tenant("acme");
    let threads: Vec<ThreadId> = (0..50).map(|_| ThreadId::new()).collect();
    let data = vectors(7, 500);
    let stored = entries(&t, &threads, &data);
    index.upsert(stored.clone()).await.unwrap();
    let whole = SearchFilter::all_threads(t.clone());
    let query = Embedding::new("m", data[1].clone(), DIM).unwrap();
    let top = index.search(&whole, &query, 10).await.unwrap();
    assert_eq!((top.matches.len(), top.strategy), (10, IndexKind::Libsql), "the whole tenant is served by the graph");
    // Remove a third: DiskANN deletions can leave nodes unreachable.
    index.remove(stored.iter().step_by(3).map(|e| e.id).collect()).await.unwrap();
    let live: Vec<_> = stored.iter().enumerate().filter(|(i, _)| i % 3 != 0).map(|(_, e)| e).collect();
    assert_eq!(index.len().await.unwrap(), live.len());
    let filter = SearchFilter::these_threads(t.clone(), vec![threads[1]]);
    let got = index.search(&filter, &query, 100).await.unwrap();
    let admitted = live.iter().filter(|e| e.thread == threads[1]).count();
    assert_eq!(got.matches.len(), admitted);
    assert!(got.matches.iter().all(|m| m.thread == threads[1]));
    // After the deletes the graph may or may not still reach 100 live
    // entries (DiskANN's graph is random); either way the answer is whole.
    let all = index.search(&whole, &query, 100).await.unwrap();
    assert_eq!(all.matches.len(), 100, "strategy {}", all.strategy);
    assert!(all.matches.iter().all(|m| live.iter().any(|e| e.id == m.id)), "no deleted entry returned");
    assert!(index.search(&SearchFilter::these_threads(t, vec![]), &query, 5).await.unwrap().matches.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_the_index_and_bad_settings_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LibsqlBackend::open_migrated(LibsqlConfig::file(db_path(&dir))).await.unwrap();
    let index = LibsqlVectorIndex::open(backend.clone(), DIM, NativeIndexConfig::default()).await.unwrap();
    let t = tenant("acme");
    index.upsert(entries(&t, &[ThreadId::new()], &vectors(3, 20))).await.unwrap();
    let again = LibsqlVectorIndex::open(backend.clone(), DIM, NativeIndexConfig::default()).await.unwrap();
    assert_eq!(again.len().await.unwrap(), 20);
    assert_eq!(again.ids().await.unwrap().len(), 20);
    // Another dimension is another table.
    let small = Arc::new(LibsqlVectorIndex::open(backend.clone(), 4, NativeIndexConfig::default()).await.unwrap());
    assert_eq!(small.len().await.unwrap(), 0);
    let wrong = entries(&t, &[ThreadId::new()], &vectors(3, 1));
    assert!(matches!(small.upsert(wrong).await, Err(StoreError::Invalid(_))));

    for bad in [
        NativeIndexConfig { compress_neighbors: Some("float8'); DROP TABLE threads; --".into()), ..Default::default() },
        NativeIndexConfig { max_neighbors: 0, ..Default::default() },
    ] {
        let r = LibsqlVectorIndex::open(backend.clone(), 8, bad).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    }
    assert!(matches!(
        LibsqlVectorIndex::open(backend, 0, NativeIndexConfig::default()).await,
        Err(StoreError::Invalid(_))
    ));
}
