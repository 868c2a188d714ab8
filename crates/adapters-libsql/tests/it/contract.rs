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
