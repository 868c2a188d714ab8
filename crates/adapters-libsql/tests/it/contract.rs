//! The backend-neutral contract suite, against a migrated file database in a
//! fresh temporary directory per case.

use std::sync::Arc;

use memlayer_adapters_libsql::{LibsqlBackend, LibsqlConfig};
use memlayer_ports::contract::Backend;

async fn fresh() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("memlayer.db"))).await.unwrap();
    Backend::from_one(Arc::new(store), Arc::new(dir))
}

memlayer_ports::contract_suite!(fresh);

/// The same suite on `:memory:`, where one connection serves everything.
mod memory {
    use super::*;

    async fn fresh() -> Backend {
        let store = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
        Backend::from_one(Arc::new(store), Arc::new(()))
    }

    memlayer_ports::contract_suite!(fresh);
}

/// The same suite with deferred commits (`commit_delay`): appends are
/// acknowledged from the append journal and committed before any read or
/// other write, so every case holds unchanged.
mod deferred {
    use std::time::Duration;

    use memlayer_adapters_libsql::Synchronous;

    use super::*;

    async fn fresh() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let config = LibsqlConfig {
            synchronous: Synchronous::Normal,
            commit_delay: Duration::from_millis(5),
            ..LibsqlConfig::file(dir.path().join("memlayer.db"))
        };
        let store = LibsqlBackend::open_migrated(config).await.unwrap();
        Backend::from_one(Arc::new(store), Arc::new(dir))
    }

    memlayer_ports::contract_suite!(fresh);
}

/// The same suite with lexical search served by the in-process tantivy
/// index (`search.lexical = "tantivy"`), fed by the catch-up: every lexical,
/// sweep and fork case holds with its assertions unchanged.
mod lexical_index {
    use memlayer_adapters_embed::TantivyLexicalIndex;

    use super::*;

    async fn fresh() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("memlayer.db"))).await.unwrap();
        let index = TantivyLexicalIndex::open(dir.path().join("memlayer.db-lexical")).unwrap();
        store.use_lexical_index(Arc::new(index)).unwrap();
        Backend::from_one(Arc::new(store), Arc::new(dir))
    }

    memlayer_ports::contract_suite!(fresh);

    /// On `:memory:`, with the index in memory too.
    mod memory {
        use super::*;

        async fn fresh() -> Backend {
            let store = LibsqlBackend::open_migrated(LibsqlConfig::memory()).await.unwrap();
            store.use_lexical_index(Arc::new(TantivyLexicalIndex::in_memory())).unwrap();
            Backend::from_one(Arc::new(store), Arc::new(()))
        }

        memlayer_ports::contract_suite!(fresh);
    }
}

/// The vector-index suite on the native index, in a file database.
mod vector_index {
    use memlayer_adapters_libsql::{LibsqlVectorIndex, NativeIndexConfig};
    use memlayer_ports::contract::IndexUnderTest;
    use memlayer_ports::contract::vector_cases::DIM;

    use super::*;

    async fn open(exact_below: usize) -> IndexUnderTest {
        let dir = tempfile::tempdir().unwrap();
        let store = LibsqlBackend::open_migrated(LibsqlConfig::file(dir.path().join("memlayer.db"))).await.unwrap();
        let config = NativeIndexConfig { exact_below, ..NativeIndexConfig::default() };
        let index = LibsqlVectorIndex::open(store, DIM, config).await.unwrap();
        IndexUnderTest { index: Arc::new(index), guard: Arc::new(dir) }
    }

    /// Every search goes through `vector_top_k` (and its fallback).
    mod native {
        async fn fresh() -> memlayer_ports::contract::IndexUnderTest {
            super::open(0).await
        }
        memlayer_ports::vector_index_suite!(fresh);
    }

    /// Default settings: these small sets are searched exactly.
    mod default {
        async fn fresh() -> memlayer_ports::contract::IndexUnderTest {
            super::open(memlayer_adapters_libsql::NativeIndexConfig::DEFAULT_EXACT_BELOW).await
        }
        memlayer_ports::vector_index_suite!(fresh);
    }
}
