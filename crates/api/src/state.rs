//! The state every handler shares ([`AppState`]).

use std::sync::Arc;

use memlayer_app::{
    CatalogService, ContextService, Coordinator, KeyService, Limiter, MemoryService, SearchService, SummaryService,
    WorkflowService, WorkingMemoryService,
};
use memlayer_ports::Database;

use crate::auth::Auth;
use crate::idempotency::Idempotency;
/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The memory use cases.
    pub memory: MemoryService,
    /// Search and embeddings.
    pub search: SearchService,
    /// Models, agents, tools and settings.
    pub catalog: CatalogService,
    /// API keys (`/api/keys`).
    pub keys: KeyService,
    /// Reachability for `/ready`.
    pub database: Arc<dyn Database>,
    /// Who may enter: the authentication layer's settings.
    pub auth: Auth,
    /// Rate limits of requests (and of embedding work, in the services).
    pub limiter: Limiter,
    /// The link to Redis, reported by `/ready`.
    pub coordinator: Option<Coordinator>,
    /// `Idempotency-Key` handling; `None` serves the routes without it.
    pub idempotency: Option<Idempotency>,
    /// Working memory per resource or thread.
    pub working: WorkingMemoryService,
    /// Thread summaries.
    pub summaries: SummaryService,
    /// Context assembly.
    pub context: ContextService,
    /// Retention policies, pruning, erasure and receipts.
    pub retention: memlayer_app::RetentionService,
    /// Exports and imports.
    pub transfer: memlayer_app::TransferService,
    /// Workflows.
    pub workflows: WorkflowService,
    /// Traces, performance, costs, evaluations, system metrics.
    pub observability: memlayer_app::ObservabilityService,
}
