//! The working-memory store, written once for both backends
//! ([`memlayer_ports::WorkingMemoryStore`], migration 13).
//!
//! A document's current version is one row of `working_memory`, keyed by
//! tenant and scope, so a read is one primary-key lookup whatever the number
//! of versions kept. A put reads that row (a thread's document through its
//! thread, which must exist and not be marked deleted), refuses a stale
//! `expected`, and writes with a statement that re-checks the version itself
//! (an insert that finds the row taken, an update whose `version = expected`
//! no longer holds), as agent state does: of two putters that both read
//! `expected`, the second gets `Conflict`. The same transaction appends the
//! version to `working_memory_versions` (a thread's dated by the thread's
//! `last_seq`, migration 25, what a fork as of a seq goes by) and deletes
//! the versions past the newest `keep` by a primary-key range.

use memlayer_domain::{
    AgentState, DomainError, Reach, StateVersion, TenantId, WorkingContent, WorkingFormatKind, WorkingMemory,
    WorkingScope, now,
};
use memlayer_ports::StoreError;

use crate::exec::{Executor, Transactor};
use crate::{Cells, Dialect, Sql, SqlValue, corrupt};

const TABLE: &str = "working_memory";

/// The scope's columns: kind, id as text, and the thread (thread scope).
fn columns(scope: &WorkingScope) -> (&'static str, String, Option<uuid::Uuid>) {
    let thread = match scope {
        WorkingScope::Thread(t) => Some(t.as_uuid()),
        WorkingScope::Resource(_) => None,
    };
    (scope.kind().as_str(), scope.id_text(), thread)
}

/// Appends ` WHERE tenant = … AND scope_kind = … AND scope_id = …`: a
/// document's primary key.
fn where_document(sql: &mut Sql, tenant: &str, kind: &'static str, id: &str) {
    sql.push(" WHERE tenant = ").bind(tenant).push(" AND scope_kind = ").bind(kind).push(" AND scope_id = ").bind(id);
}

/// The current row: `format`, `content`, `version`, `updated_at`. For a
/// thread's document, one row when the thread exists (and is not marked
/// deleted), NULL columns when it has no document; for a resource's, a row
/// only when it has one.
#[must_use]
pub fn current_sql(dialect: Dialect, tenant: &TenantId, scope: &WorkingScope) -> Sql {
    let (kind, id, thread) = columns(scope);
    let mut sql = Sql::new(dialect);
    match thread {
        Some(thread) => {
            sql.push("SELECT w.format, w.content, w.version, w.updated_at FROM threads t ")
                .push("LEFT JOIN working_memory w ON w.tenant = t.tenant AND w.scope_kind = ")
                .bind(kind)
                .push(" AND w.scope_id = ")
                .bind(id)
                .push(" WHERE t.tenant = ")
                .bind(tenant.as_str())
                .push(" AND t.id = ")
                .bind(thread)
                .push(" AND t.deleted_at IS NULL");
        }
        None => {
            sql.push("SELECT format, content, version, updated_at FROM working_memory");
            where_document(&mut sql, tenant.as_str(), kind, &id);
        }
    }
    sql
}

/// The kept versions of a document, newest first, at most `limit`: a
/// primary-key range read backwards.
#[must_use]
pub fn versions_sql(dialect: Dialect, tenant: &TenantId, scope: &WorkingScope, limit: u32) -> Sql {
    let (kind, id, _) = columns(scope);
    let mut sql = Sql::new(dialect);
    sql.push("SELECT format, content, version, updated_at FROM working_memory_versions");
    where_document(&mut sql, tenant.as_str(), kind, &id);
    sql.push(" ORDER BY version DESC LIMIT ").bind(i64::from(limit));
    sql
}

/// Deletes a document's versions older than `oldest_kept`: a primary-key
/// range.
#[must_use]
pub fn prune_sql(dialect: Dialect, tenant: &TenantId, scope: &WorkingScope, oldest_kept: i64) -> Sql {
    let (kind, id, _) = columns(scope);
    let mut sql = Sql::new(dialect);
    sql.push("DELETE FROM working_memory_versions");
    where_document(&mut sql, tenant.as_str(), kind, &id);
    sql.push(" AND version < ").bind(oldest_kept);
    sql
}

/// `NotFound` unless a thread scope's thread exists and is not marked
/// deleted (a resource scope needs no row).
async fn check_thread(ex: &dyn Executor, tenant: &TenantId, scope: &WorkingScope) -> Result<(), StoreError> {
    let WorkingScope::Thread(thread) = scope else {
        return Ok(());
    };
    let mut sql = Sql::new(ex.dialect());
    sql.push("SELECT 1 FROM threads WHERE tenant = ")
        .bind(tenant.as_str())
        .push(" AND id = ")
        .bind(thread.as_uuid())
        .push(" AND deleted_at IS NULL");
    match ex.fetch_one("check working memory's thread", sql).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found("thread", thread)),
    }
}

/// Decodes `format, content, version, updated_at`; `None` when the version
/// is NULL (a thread without a document).
pub(crate) fn decode(row: &[SqlValue], scope: &WorkingScope) -> Result<Option<WorkingMemory>, StoreError> {
    let r = Cells::new(row, TABLE);
    let Some(version) = r.opt_int(2, "version")? else {
        return Ok(None);
    };
    let version = StateVersion::try_from(version).map_err(|e| corrupt(TABLE, "version", e))?;
    let format = r.parse(0, "format", |s| WorkingFormatKind::parse("format", &s))?;
    let text = r.text(1, "content")?;
    let content = match format {
        WorkingFormatKind::Json => {
            WorkingContent::Json(serde_json::from_str(&text).map_err(|e| corrupt(TABLE, "content", e))?)
        }
        WorkingFormatKind::Markdown => WorkingContent::Markdown(text),
    };
    Ok(Some(WorkingMemory { scope: scope.clone(), content, version, updated_at: r.timestamp(3, "updated_at")? }))
}

/// The stored text of a document.
pub(crate) fn stored_text(content: &WorkingContent) -> Result<String, StoreError> {
    match content {
        WorkingContent::Json(v) => serde_json::to_string(v).map_err(StoreError::backend),
        WorkingContent::Markdown(s) => Ok(s.clone()),
    }
}

/// [`memlayer_ports::WorkingMemoryStore::get_working`].
pub async fn get<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    scope: &WorkingScope,
) -> Result<Option<WorkingMemory>, StoreError> {
    let tenant = who.tenant();
    let (t, s) = (tenant.clone(), scope.clone());
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                match ex.fetch_one("read working memory", current_sql(ex.dialect(), &t, &s)).await? {
                    Some(row) => decode(&row, &s),
                    None => match &s {
                        WorkingScope::Thread(thread) => Err(StoreError::not_found("thread", thread)),
                        WorkingScope::Resource(_) => Ok(None),
                    },
                }
            })
        }),
    )
    .await
}

/// [`memlayer_ports::WorkingMemoryStore::put_working`].
pub async fn put<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    scope: &WorkingScope,
    content: WorkingContent,
    expected: StateVersion,
    keep: u32,
) -> Result<WorkingMemory, StoreError> {
    let tenant = who.tenant();
    content.validate()?;
    if keep == 0 {
        return Err(DomainError::new("keep", "at least the new version is kept: 1 or more").into());
    }
    let version = AgentState::next_version(expected)?;
    let (Ok(stored), Ok(expected_i)) = (i64::try_from(version), i64::try_from(expected)) else {
        return Err(DomainError::new("expected_version", format!("is {expected}, beyond what the store keeps")).into());
    };
    let text = stored_text(&content)?;
    let format = content.format().as_str();
    let at = now();
    let (t, s) = (tenant.clone(), scope.clone());
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let seen = match ex.fetch_one("put working memory", current_sql(ex.dialect(), &t, &s)).await? {
                    Some(row) => decode(&row, &s)?.map_or(0, |w| w.version),
                    None => match &s {
                        WorkingScope::Thread(thread) => return Err(StoreError::not_found("thread", thread)),
                        WorkingScope::Resource(_) => 0,
                    },
                };
                if seen != expected {
                    return Err(StoreError::Conflict(format!("working memory version is {seen}, expected {expected}")));
                }
                let (kind, id, thread) = columns(&s);
                let thread = SqlValue::from(thread);
                let mut sql = Sql::new(ex.dialect());
                if expected == 0 {
                    sql.push("INSERT INTO working_memory (tenant, scope_kind, scope_id, thread_id, format, content, ")
                        .push("version, updated_at) VALUES (")
                        .bind(t.as_str())
                        .push(", ")
                        .bind(kind)
                        .push(", ")
                        .bind(id.as_str())
                        .push(", ")
                        .bind(thread.clone())
                        .push(", ")
                        .bind(format)
                        .push(", ")
                        .bind(text.as_str())
                        .push(", ")
                        .bind(stored)
                        .push(", ")
                        .bind(at)
                        .push(") ON CONFLICT (tenant, scope_kind, scope_id) DO NOTHING");
                } else {
                    sql.push("UPDATE working_memory SET format = ")
                        .bind(format)
                        .push(", content = ")
                        .bind(text.as_str())
                        .push(", version = ")
                        .bind(stored)
                        .push(", updated_at = ")
                        .bind(at);
                    where_document(&mut sql, t.as_str(), kind, &id);
                    sql.push(" AND version = ").bind(expected_i);
                }
                if ex.execute("put working memory", sql).await? == 0 {
                    return Err(StoreError::Conflict(format!(
                        "working memory version moved past {expected} while writing (a concurrent write won)"
                    )));
                }
                let mut sql = Sql::new(ex.dialect());
                let seq = thread.clone();
                sql.push("INSERT INTO working_memory_versions (tenant, scope_kind, scope_id, version, thread_id, ")
                    .push("format, content, updated_at, at_seq) VALUES (")
                    .bind(t.as_str())
                    .push(", ")
                    .bind(kind)
                    .push(", ")
                    .bind(id.as_str())
                    .push(", ")
                    .bind(stored)
                    .push(", ")
                    .bind(thread)
                    .push(", ")
                    .bind(format)
                    .push(", ")
                    .bind(text)
                    .push(", ")
                    .bind(at)
                    .push(", ");
                // A thread's version is dated by the thread's last seq (what
                // a fork as of a seq goes by, migration 25); a resource's
                // has none.
                if seq == SqlValue::Null {
                    sql.push("NULL)");
                } else {
                    sql.push("(SELECT last_seq FROM threads WHERE tenant = ").bind(t.as_str());
                    sql.push(" AND id = ").bind(seq).push("))");
                }
                ex.execute("keep working memory version", sql).await?;
                let oldest_kept = stored - i64::from(keep) + 1;
                if oldest_kept > 1 {
                    let sql = prune_sql(ex.dialect(), &t, &s, oldest_kept);
                    ex.execute("drop old working memory versions", sql).await?;
                }
                Ok(())
            })
        }),
    )
    .await?;
    Ok(WorkingMemory { scope: scope.clone(), content, version, updated_at: at })
}

/// [`memlayer_ports::WorkingMemoryStore::working_versions`].
pub async fn versions<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    scope: &WorkingScope,
    limit: u32,
) -> Result<Vec<WorkingMemory>, StoreError> {
    let tenant = who.tenant();
    let (t, s) = (tenant.clone(), scope.clone());
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                check_thread(ex, &t, &s).await?;
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let sql = versions_sql(ex.dialect(), &t, &s, limit);
                let rows = ex.fetch("list working memory versions", sql).await?;
                let mut kept = Vec::with_capacity(rows.len());
                for row in rows {
                    kept.extend(decode(&row, &s)?);
                }
                Ok(kept)
            })
        }),
    )
    .await
}

/// Implements `memlayer_ports::WorkingMemoryStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! working_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::WorkingMemoryStore for $backend {
            async fn get_working(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                scope: &::memlayer_domain::WorkingScope,
            ) -> Result<Option<::memlayer_domain::WorkingMemory>, ::memlayer_ports::StoreError> {
                $crate::working::get(self, who, scope).await
            }

            async fn put_working(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                scope: &::memlayer_domain::WorkingScope,
                content: ::memlayer_domain::WorkingContent,
                expected: ::memlayer_domain::StateVersion,
                keep: u32,
            ) -> Result<::memlayer_domain::WorkingMemory, ::memlayer_ports::StoreError> {
                $crate::working::put(self, who, scope, content, expected, keep).await
            }

            async fn working_versions(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                scope: &::memlayer_domain::WorkingScope,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::WorkingMemory>, ::memlayer_ports::StoreError> {
                $crate::working::versions(self, who, scope, limit).await
            }
        }
    };
}
