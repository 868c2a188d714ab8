//! The state every handler shares ([`AppState`]), and what extractors take
//! from it through axum's `FromRef`, so they need not name this type.

use std::sync::Arc;

use axum::extract::FromRef;
use memlayer_app::{CatalogService, MemoryService, SearchService};
use memlayer_ports::Database;

use crate::extract::DefaultTenant;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The memory use cases.
    pub memory: MemoryService,
    /// Search and embeddings.
    pub search: SearchService,
    /// Models, agents, tools and settings.
    pub catalog: CatalogService,
    /// Reachability for `/ready`.
    pub database: Arc<dyn Database>,
}

impl FromRef<AppState> for DefaultTenant {
    fn from_ref(state: &AppState) -> Self {
        Self(state.memory.default_tenant().clone())
    }
}
