//! Contract cases of [`crate::Database`]: ping and migrations. Each
//! `pub async fn` here takes a fresh [`Backend`]; adding a case means adding
//! its name to `contract_suite!` too (the completeness test fails otherwise).

use super::Backend;

pub async fn database_ping_and_idempotent_migrations(b: Backend) {
    b.database.ping().await.unwrap();
    assert!(!b.database.describe().is_empty());
    let status = b.database.migration_status().await.unwrap();
    assert!(!status.is_empty(), "at least one migration");
    assert!(status.iter().all(|m| m.applied_at.is_some()), "fresh backend is fully migrated");
    assert!(status.windows(2).all(|p| p[0].version < p[1].version), "ordered by version");
    let again = b.database.migrate_up().await.unwrap();
    assert!(again.is_empty(), "nothing pending the second time");
}
