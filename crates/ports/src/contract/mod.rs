//! The backend-neutral contract suite.
//!
//! Every storage adapter proves the port contracts by expanding
//! [`contract_suite!`](crate::contract_suite) in its integration tests with a
//! factory that returns a fresh, migrated [`Backend`]:
//!
//! ```text
//! async fn fresh() -> memlayer_ports::contract::Backend { /* open a new store */ }
//! memlayer_ports::contract_suite!(fresh);
//! ```
//!
//! A backend that needs a server may return `Option<Backend>` instead: `None`
//! skips the case, after the factory has printed a `SKIP` line (and failed
//! instead when `CI` is set), as every test of a missing backend does.
//!
//! The cases live in one file per port: `thread_cases.rs`,
//! `message_cases.rs`, `state_cases.rs`, `database_cases.rs`,
//! `embedding_cases.rs`, `sweep_cases.rs` (deleted threads, all ports at
//! once), `token_cases.rs` (messages' token counts per encoding),
//! `catalog_cases.rs` (the catalog),
//! `idempotency_cases.rs` (idempotency records), `key_cases.rs` (API
//! keys), `working_cases.rs` (working memory), `summary_cases.rs`
//! (summaries and their jobs), `quota_cases.rs` (storage quotas and
//! usage), `retention_cases.rs` (retention policies, pruning, erasure,
//! receipts, the lease), `transfer_cases.rs` (exports and imports) and
//! `deletion_cases.rs` (the deletion log) and
//! `observability_cases.rs` (spans, traces, model calls, evaluations,
//! system metric samples, their retention), with
//! the fixtures they share
//! in `support.rs`. The macro expands one `#[tokio::test]` per case, and
//! completeness tests that fail when a `pub async fn` case of a file is
//! missing from the macro's list for that file, so a case cannot be written
//! and silently never run. `vector_cases.rs` holds the cases of
//! [`vector_index_suite!`](crate::vector_index_suite).
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed case")]

use std::any::Any;
use std::sync::Arc;

use crate::{
    CatalogStore, Database, DeletionLog, EmbeddingStore, IdempotencyStore, KeyStore, MessageStore, ObservabilityStore,
    RetentionStore, StateStore, SummaryQueue, SummaryStore, ThreadStore, TransferStore, UsageStore, VectorIndex,
    WorkflowStore, WorkingMemoryStore,
};

pub mod catalog_cases;
pub mod database_cases;
pub mod deletion_cases;
pub mod embedding_cases;
pub mod idempotency_cases;
pub mod key_cases;
pub mod message_cases;
pub mod observability_cases;
pub mod quota_cases;
pub mod retention_cases;
pub mod state_cases;
pub mod summary_cases;
mod support;
pub mod sweep_cases;
pub mod thread_cases;
pub mod token_cases;
pub mod transfer_cases;
pub mod vector_cases;
pub mod workflow_cases;
pub mod working_cases;

/// One backend under test: every port served by the same store.
#[derive(Clone)]
pub struct Backend {
    /// Thread port.
    pub threads: Arc<dyn ThreadStore>,
    /// Message port.
    pub messages: Arc<dyn MessageStore>,
    /// State port.
    pub states: Arc<dyn StateStore>,
    /// Database port.
    pub database: Arc<dyn Database>,
    /// Embedding store port.
    pub embeddings: Arc<dyn EmbeddingStore>,
    /// Catalog port.
    pub catalog: Arc<dyn CatalogStore>,
    /// Idempotency record port.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// API key port.
    pub keys: Arc<dyn KeyStore>,
    /// Working-memory port.
    pub working: Arc<dyn WorkingMemoryStore>,
    /// Summary port.
    pub summaries: Arc<dyn SummaryStore>,
    /// Summary job port.
    pub summary_queue: Arc<dyn SummaryQueue>,
    /// Storage usage port.
    pub usage: Arc<dyn UsageStore>,
    /// Retention port.
    pub retention: Arc<dyn RetentionStore>,
    /// Export and import port.
    pub transfer: Arc<dyn TransferStore>,
    /// Workflow port.
    pub workflows: Arc<dyn WorkflowStore>,
    /// Deletion log port.
    pub deletions: Arc<dyn DeletionLog>,
    /// Observability port.
    pub observability: Arc<dyn ObservabilityStore>,
    /// Anything that must outlive the test (a temp dir, a server handle).
    pub guard: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("database", &self.database.describe()).finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend whose ports are all the same object.
    pub fn from_one<T>(store: Arc<T>, guard: Arc<dyn Any + Send + Sync>) -> Self
    where
        T: ThreadStore
            + MessageStore
            + StateStore
            + Database
            + EmbeddingStore
            + CatalogStore
            + IdempotencyStore
            + KeyStore
            + WorkingMemoryStore
            + SummaryStore
            + SummaryQueue
            + UsageStore
            + RetentionStore
            + TransferStore
            + WorkflowStore
            + DeletionLog
            + ObservabilityStore
            + 'static,
    {
        Self {
            threads: store.clone(),
            messages: store.clone(),
            states: store.clone(),
            database: store.clone(),
            embeddings: store.clone(),
            catalog: store.clone(),
            idempotency: store.clone(),
            keys: store.clone(),
            working: store.clone(),
            summaries: store.clone(),
            summary_queue: store.clone(),
            usage: store.clone(),
            retention: store.clone(),
            transfer: store.clone(),
            workflows: store.clone(),
            deletions: store.clone(),
            observability: store,
            guard,
        }
    }
}

/// What a suite's factory returns: the thing under test, or `None` when its
/// backend is missing and the case is skipped (the factory says so with a
/// `SKIP:` line, and fails instead when `CI` is set).
pub trait UnderTest {
    /// The thing under test.
    type Item;
    /// `Some` to run the case, `None` to skip it.
    fn under_test(self) -> Option<Self::Item>;
}

impl UnderTest for Backend {
    type Item = Self;
    fn under_test(self) -> Option<Self> {
        Some(self)
    }
}

impl UnderTest for Option<Backend> {
    type Item = Backend;
    fn under_test(self) -> Self {
        self
    }
}

impl UnderTest for IndexUnderTest {
    type Item = Self;
    fn under_test(self) -> Option<Self> {
        Some(self)
    }
}

impl UnderTest for Option<IndexUnderTest> {
    type Item = IndexUnderTest;
    fn under_test(self) -> Self {
        self
    }
}

/// Fails when, for any of the per-port case files (`thread_cases.rs`,
/// `message_cases.rs`, `state_cases.rs`, `database_cases.rs`,
/// `embedding_cases.rs`), a `pub async fn` in the file is not listed for its
/// module, or the reverse, or a file is not listed at all.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_complete(listed: &[(&str, &[&str])]) {
    const FILES: [(&str, &str); 7] = [
        ("thread_cases", include_str!("thread_cases.rs")),
        ("message_cases", include_str!("message_cases.rs")),
        ("state_cases", include_str!("state_cases.rs")),
        ("database_cases", include_str!("database_cases.rs")),
        ("embedding_cases", include_str!("embedding_cases.rs")),
        ("sweep_cases", include_str!("sweep_cases.rs")),
        ("token_cases", include_str!("token_cases.rs")),
    ];
    let modules: Vec<&str> = listed.iter().map(|(module, _)| *module).collect();
    let files: Vec<&str> = FILES.iter().map(|(module, _)| *module).collect();
    assert_eq!(modules, files, "contract suite out of date: the macro's modules differ from the case files");
    for ((_, source), (_, cases)) in FILES.iter().zip(listed) {
        assert_complete_in(source, cases);
    }
}

/// As [`assert_complete`] for the catalog cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_catalog_complete(listed: &[&str]) {
    assert_complete_in(include_str!("catalog_cases.rs"), listed);
}

/// As [`assert_complete`] for the idempotency-store cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_idempotency_complete(listed: &[&str]) {
    assert_complete_in(include_str!("idempotency_cases.rs"), listed);
}

/// As [`assert_complete`] for the API key cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_keys_complete(listed: &[&str]) {
    assert_complete_in(include_str!("key_cases.rs"), listed);
}

/// As [`assert_complete`] for the summary cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_summary_complete(listed: &[&str]) {
    assert_complete_in(include_str!("summary_cases.rs"), listed);
}

/// As [`assert_complete`] for the working-memory cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_working_complete(listed: &[&str]) {
    assert_complete_in(include_str!("working_cases.rs"), listed);
}

/// As [`assert_complete`] for the storage-quota cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_quota_complete(listed: &[&str]) {
    assert_complete_in(include_str!("quota_cases.rs"), listed);
}

/// As [`assert_complete`] for the retention cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_retention_complete(listed: &[&str]) {
    assert_complete_in(include_str!("retention_cases.rs"), listed);
}

/// As [`assert_complete`] for the export and import cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_transfer_complete(listed: &[&str]) {
    assert_complete_in(include_str!("transfer_cases.rs"), listed);
}

/// As [`assert_complete`] for the observability cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_observability_complete(listed: &[&str]) {
    assert_complete_in(include_str!("observability_cases.rs"), listed);
}

/// As [`assert_complete`] for the vector-index cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_vector_complete(listed: &[&str]) {
    assert_complete_in(include_str!("vector_cases.rs"), listed);
}

/// As [`assert_complete`] for the deletion-log cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_deletion_complete(listed: &[&str]) {
    assert_complete_in(include_str!("deletion_cases.rs"), listed);
}

/// As [`assert_complete`] for the workflow cases.
///
/// # Panics
/// On any difference, naming the cases.
pub fn assert_workflow_complete(listed: &[&str]) {
    assert_complete_in(include_str!("workflow_cases.rs"), listed);
}

fn assert_complete_in(source: &str, listed: &[&str]) {
    let defined: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    let missing: Vec<_> = defined.iter().filter(|d| !listed.contains(d)).collect();
    let unknown: Vec<_> = listed.iter().filter(|l| !defined.contains(l)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "contract suite out of date: cases defined but not run: {missing:?}; listed but not defined: {unknown:?}"
    );
    assert!(!defined.is_empty(), "no contract cases found");
}

/// Expands the whole contract suite against a backend factory
/// (`async fn() -> Backend`, or `-> Option<Backend>` for a backend that may
/// be missing: see [`UnderTest`]). The case list lives only here.
#[macro_export]
macro_rules! contract_suite {
    ($factory:path) => {
        $crate::__contract_expand!(
            $factory;
            thread_cases: [
                thread_create_returns_whole_thread,
                thread_missing_or_foreign_is_not_found,
                thread_update_patches_and_bumps_updated_at,
                thread_empty_patch_changes_nothing,
                thread_delete_removes_messages_and_state,
                thread_list_pages_newest_first_without_gaps,
                thread_list_filters,
                thread_list_rejects_foreign_cursor,
                thread_fork_copies_up_to_at_seq_exactly,
                thread_fork_refuses_beyond_missing_and_foreign,
                thread_fork_dates_what_migration_25_found,
            ],
            message_cases: [
                append_assigns_consecutive_seqs_and_bumps_thread,
                append_rejects_empty_and_oversized_batch,
                append_to_missing_or_foreign_thread_stores_nothing,
                append_round_trips_every_field,
                page_forward_and_backward_cover_thread_exactly,
                page_rejects_foreign_or_contradicting_cursor,
                last_returns_newest_oldest_first,
                message_get_is_tenant_scoped,
                concurrent_appenders_get_gapless_increasing_seqs,
                paging_during_concurrent_appends_never_skips_or_repeats,
                messages_get_many_and_delete,
                message_reads_stop_at_a_byte_budget,
                read_windows_reads_each_message_once_within_a_budget,
                concurrent_appends_fail_alone,
            ],
            state_cases: [
                state_save_and_load_versions,
                state_stale_version_conflicts,
                state_concurrent_savers_exactly_one_wins,
                state_rejects_non_object_and_missing_thread,
            ],
            database_cases: [
                database_ping_and_idempotent_migrations,
            ],
            embedding_cases: [
                append_creates_embedding_jobs_atomically,
                completed_jobs_store_vectors,
                deleted_messages_lose_vectors_and_jobs,
                failed_jobs_back_off,
                coverage_counts_pending_and_other_model_per_scope,
                coverage_counts_stop_at_the_limit,
                enqueue_missing_is_idempotent_per_model,
                lexical_search_ranks_and_escapes,
                resource_threads_are_tenant_scoped,
                deleting_the_newest_messages_loses_nothing,
                appends_and_deletes_never_lose_a_message,
                lexical_scores_ignore_other_tenants,
                due_jobs_are_fair_across_tenants,
                claimed_jobs_are_leased_until_done_or_expired,
                lexical_search_finds_other_forms_of_a_word,
            ],
            sweep_cases: [
                deleted_thread_is_missing_everywhere_at_once,
                sweep_removes_deleted_threads_in_chunks,
            ],
            token_cases: [
                token_counts_are_stored_once_per_encoding,
                token_counts_are_tenant_scoped,
                token_counts_go_with_their_message_and_thread,
            ],
        );
        $crate::__catalog_expand!(
            $factory;
            catalog_model_crud_round_trips,
            catalog_agent_and_tool_crud_round_trips,
            catalog_unknown_model_or_tool_is_rejected,
            catalog_default_model_is_unique_per_tenant,
            catalog_concurrent_default_moves_leave_one_default,
            catalog_is_tenant_scoped,
            catalog_filters_apply_each_operator_to_each_kind,
            catalog_sorting_pages_without_skips_or_repeats,
            catalog_settings_round_trip_and_absent_is_none,
        );
        $crate::__idempotency_expand!(
            $factory;
            idempotency_claim_complete_then_replay,
            idempotency_other_fingerprint_is_a_mismatch,
            idempotency_release_frees_the_key,
            idempotency_expired_records_count_as_absent,
            idempotency_keys_are_per_tenant,
            idempotency_concurrent_claims_exactly_one_new,
            idempotency_purge_deletes_only_expired_records,
            idempotency_rejects_bad_input,
        );
        $crate::__keys_expand!(
            $factory;
            keys_round_trip_every_field,
            keys_are_found_by_id_across_tenants_or_not_at_all,
            keys_duplicate_id_conflicts_in_any_tenant,
            keys_list_is_newest_first_and_tenant_scoped,
            keys_list_pages_by_cursor_and_resource,
            keys_revoke_keeps_the_first_time_and_is_tenant_scoped,
            keys_last_use_is_recorded_in_batches_and_only_moves_forward,
        );
        $crate::__working_expand!(
            $factory;
            working_put_then_get_per_scope_and_tenant,
            working_stale_version_conflicts,
            working_concurrent_putters_exactly_one_wins,
            working_rejects_bad_input_and_missing_threads,
            working_versions_keep_the_newest,
            working_thread_document_goes_with_its_thread,
            working_agent_options_round_trip,
        );
        $crate::__summary_expand!(
            $factory;
            summary_versions_advance_from_the_version_read,
            summary_stale_version_conflicts,
            summary_concurrent_savers_exactly_one_wins,
            summary_rejects_bad_input,
            summary_of_a_missing_foreign_or_deleted_thread_is_not_found,
            summary_never_touches_a_message,
            summary_backlog_counts_what_follows_the_coverage,
            summary_jobs_are_queued_leased_retried_and_completed,
            summary_jobs_concurrent_claims_never_share_a_job,
            summary_jobs_are_claimed_fairly_across_tenants,
            summary_versions_page_by_version,
        );
        $crate::__quota_expand!(
            $factory;
            quota_usage_counts_what_is_stored,
            quota_last_thread_slot_is_taken_once,
            quota_last_message_slot_is_taken_once,
            quota_last_byte_slot_is_taken_once,
            quota_refused_batch_stores_nothing,
            quota_deletes_free_room,
            quota_backfill_counts_what_is_stored,
            quota_fork_counts_what_it_copies,
        );
        $crate::__retention_expand!(
            $factory;
            retention_policies_round_trip_and_refuse_bad_rules,
            retention_thread_age_deletes_idle_threads_everywhere,
            retention_message_age_deletes_old_messages_everywhere,
            retention_messages_per_thread_keeps_the_newest,
            retention_threads_per_resource_keeps_the_most_recent,
            retention_erase_removes_everything_of_a_resource,
            retention_runs_and_the_lease,
        );
        $crate::__transfer_expand!(
            $factory;
            transfer_export_reads_every_record_in_pages,
            transfer_import_keeps_ids_and_is_idempotent,
            transfer_import_refuses_conflicts_storing_nothing,
            transfer_catalog_and_resource_working_import,
        );
        $crate::__workflow_expand!(
            $factory;
            workflow_create_get_and_list_round_trip,
            workflow_refused_operations_store_nothing,
            workflow_steps_run_in_order_through_claims,
            workflow_expired_leases_are_claimed_again_and_failures_back_off,
            workflow_concurrent_claimers_never_share_a_step,
            workflow_delete_takes_steps_events_and_threads,
            workflow_patch_changes_descriptive_fields_only,
        );
        $crate::__deletion_expand!(
            $factory;
            deletion_log_holds_every_deleted_message_and_thread,
            deletion_log_pages_and_tells_a_reader_behind_a_purge,
        );
        $crate::__observability_expand!(
            $factory;
            obs_ingest_round_trips_every_field,
            obs_ingest_is_idempotent_and_all_or_nothing,
            obs_traces_merge_batches_as_the_domain_does,
            obs_traces_are_tenant_scoped,
            obs_trace_listing_filters_and_pages,
            obs_text_search_is_bounded_and_resumable,
            obs_orphans_are_kept_and_detail_is_capped,
            obs_model_calls_and_usage,
            obs_eval_runs_round_trip_page_and_compare,
            obs_metrics_bucket_and_purge,
            obs_purge_removes_whole_old_traces,
            obs_store_gauges,
            obs_migration_26_moves_events_both_ways,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __deletion_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::deletion_cases::$case(backend).await;
            }
        )*

        #[test]
        fn deletion_contract_suite_is_complete() {
            $crate::contract::assert_deletion_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __observability_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::observability_cases::$case(backend).await;
            }
        )*

        #[test]
        fn observability_contract_suite_is_complete() {
            $crate::contract::assert_observability_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __retention_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::retention_cases::$case(backend).await;
            }
        )*

        #[test]
        fn retention_contract_suite_is_complete() {
            $crate::contract::assert_retention_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __workflow_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::workflow_cases::$case(backend).await;
            }
        )*

        #[test]
        fn workflow_contract_suite_is_complete() {
            $crate::contract::assert_workflow_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __summary_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::summary_cases::$case(backend).await;
            }
        )*

        #[test]
        fn summary_contract_suite_is_complete() {
            $crate::contract::assert_summary_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __working_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::working_cases::$case(backend).await;
            }
        )*

        #[test]
        fn working_contract_suite_is_complete() {
            $crate::contract::assert_working_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __quota_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::quota_cases::$case(backend).await;
            }
        )*

        #[test]
        fn quota_contract_suite_is_complete() {
            $crate::contract::assert_quota_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __transfer_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::transfer_cases::$case(backend).await;
            }
        )*

        #[test]
        fn transfer_contract_suite_is_complete() {
            $crate::contract::assert_transfer_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __keys_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::key_cases::$case(backend).await;
            }
        )*

        #[test]
        fn keys_contract_suite_is_complete() {
            $crate::contract::assert_keys_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __idempotency_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::idempotency_cases::$case(backend).await;
            }
        )*

        #[test]
        fn idempotency_contract_suite_is_complete() {
            $crate::contract::assert_idempotency_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __catalog_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::catalog_cases::$case(backend).await;
            }
        )*

        #[test]
        fn catalog_contract_suite_is_complete() {
            $crate::contract::assert_catalog_complete(&[$(stringify!($case)),*]);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_expand {
    ($factory:path; $($module:ident: [$($case:ident),* $(,)?]),* $(,)?) => {
        $($(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::$module::$case(backend).await;
            }
        )*)*

        #[test]
        fn contract_suite_is_complete() {
            $crate::contract::assert_complete(&[$((stringify!($module), &[$(stringify!($case)),*])),*]);
        }
    };
}

/// One vector index under test.
#[derive(Clone)]
pub struct IndexUnderTest {
    /// The index, empty.
    pub index: Arc<dyn VectorIndex>,
    /// Anything that must outlive the test.
    pub guard: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for IndexUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexUnderTest").field("kind", &self.index.kind()).finish_non_exhaustive()
    }
}

/// Expands the vector-index contract suite against a factory
/// (`async fn() -> IndexUnderTest`, or `-> Option<IndexUnderTest>`: see
/// [`UnderTest`]) producing an empty index for vectors of
/// [`vector_cases::DIM`] dimensions. Expand it once per configuration inside
/// its own module.
#[macro_export]
macro_rules! vector_index_suite {
    ($factory:path) => {
        $crate::__vector_expand!(
            $factory;
            ranks_by_exact_cosine,
            filters_by_tenant_and_threads,
            removed_entries_are_never_returned,
            upsert_replaces_the_same_id,
            models_never_mix,
            dimension_mismatch_is_invalid,
            recall_on_clustered_data,
            len_and_ids_track_live_entries,
            excluded_entries_are_skipped_not_counted,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __vector_expand {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(under_test) = $crate::contract::UnderTest::under_test($factory().await) else { return };
                $crate::contract::vector_cases::$case(under_test).await;
            }
        )*

        #[test]
        fn vector_index_suite_is_complete() {
            $crate::contract::assert_vector_complete(&[$(stringify!($case)),*]);
        }
    };
}
