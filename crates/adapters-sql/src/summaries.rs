//! Thread summaries and their job queue (migration 14, `thread_summaries`
//! and `summary_jobs`), written once for both backends.
//!
//! A summary is saved as version `expected + 1` by one `INSERT … ON
//! CONFLICT (thread_id, version) DO NOTHING` after reading the newest
//! version in the same transaction: of two savers that read the same
//! version, the second inserts nothing and gets `Conflict` (on Postgres it
//! waits on the unique index for the first to commit). No statement here
//! writes `messages`.
//!
//! A job is one row per thread. Enqueueing is an upsert that counts
//! requests; completing removes the row only if no request came after the
//! worker read it, so an append that asks for a summary while one runs is
//! never lost. Claims take due, unleased jobs of live threads (on Postgres
//! `FOR UPDATE SKIP LOCKED`, so concurrent servers never take one job
//! twice) and lease them. The rows reach their tenant through their thread
//! (Postgres also stores it, for row-level security) and go with it: the
//! foreign keys cascade when the sweeper removes the thread row.

use memlayer_domain::{NewSummary, Reach, Summary, TenantId, ThreadId, Timestamp, now};
use memlayer_ports::{
    MAX_SUMMARY_ERROR_BYTES, StoreError, SummaryBacklog, SummaryJob, check_new_summary, cut_to_bytes,
};

use crate::exec::{Executor, Row, Transactor};
use crate::{Cells, Dialect, Sql, SqlValue, corrupt};

const SUMMARIES: &str = "thread_summaries";
const JOBS: &str = "summary_jobs";

/// Most versions one [`versions`] call returns.
pub const MAX_VERSIONS: u32 = 1_000;

fn to_i64(value: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        memlayer_domain::DomainError::new(field, format!("is {value}, beyond what the store keeps")).into()
    })
}

fn to_u64(value: i64, table: &'static str, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|e| corrupt(table, column, e))
}

/// The thread's `last_seq` when it exists for `tenant` and is not marked
/// deleted.
fn live_thread(ex: &dyn Executor, tenant: &TenantId, thread: ThreadId) -> Sql {
    let mut sql = Sql::new(ex.dialect());
    sql.push("SELECT last_seq FROM threads WHERE tenant = ")
        .bind(tenant.as_str())
        .push(" AND id = ")
        .bind(thread.as_uuid())
        .push(" AND deleted_at IS NULL");
    sql
}

async fn last_seq(ex: &dyn Executor, tenant: &TenantId, thread: ThreadId) -> Result<i64, StoreError> {
    let row = ex
        .fetch_one("find thread", live_thread(ex, tenant, thread))
        .await?
        .ok_or_else(|| StoreError::not_found("thread", thread))?;
    Cells::new(&row, "threads").int(0, "last_seq")
}

pub(crate) const SUMMARY_COLUMNS: &str = "version, text, covers_through, covered_messages, summarizer, created_at";

pub(crate) fn decode_summary(thread: ThreadId, row: &Row) -> Result<Summary, StoreError> {
    let r = Cells::new(row, SUMMARIES);
    Ok(Summary {
        thread_id: thread,
        version: to_u64(r.int(0, "version")?, SUMMARIES, "version")?,
        text: r.text(1, "text")?,
        covers_through: r.int(2, "covers_through")?,
        covered_messages: to_u64(r.int(3, "covered_messages")?, SUMMARIES, "covered_messages")?,
        summarizer: r.text(4, "summarizer")?,
        created_at: r.timestamp(5, "created_at")?,
    })
}

/// The newest `limit` summaries of a thread already known to be the
/// tenant's, newest first.
pub fn newest(dialect: Dialect, thread: ThreadId, limit: u32) -> Sql {
    newest_before(dialect, thread, None, limit)
}

/// Up to `limit` versions of `thread` below `before` (all when `None`),
/// newest first: the primary key (thread, version) serves it as a range.
pub fn newest_before(dialect: Dialect, thread: ThreadId, before: Option<u64>, limit: u32) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("SELECT ").push(SUMMARY_COLUMNS).push(" FROM thread_summaries WHERE thread_id = ");
    sql.bind(thread.as_uuid());
    if let Some(before) = before {
        sql.push(" AND version < ").bind(i64::try_from(before).unwrap_or(i64::MAX));
    }
    sql.push(" ORDER BY version DESC LIMIT ").bind(limit);
    sql
}

async fn newest_summary(ex: &dyn Executor, thread: ThreadId) -> Result<Option<Summary>, StoreError> {
    match ex.fetch_one("read summary", newest(ex.dialect(), thread, 1)).await? {
        Some(row) => decode_summary(thread, &row).map(Some),
        None => Ok(None),
    }
}

/// [`memlayer_ports::SummaryStore::current_summary`].
pub async fn current<B: Transactor>(b: &B, who: &dyn Reach, thread: ThreadId) -> Result<Option<Summary>, StoreError> {
    let tenant = who.tenant();
    let t = tenant.clone();
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                last_seq(ex, &t, thread).await?;
                newest_summary(ex, thread).await
            })
        }),
    )
    .await
}

/// [`memlayer_ports::SummaryStore::summary_versions`]: at most
/// [`MAX_VERSIONS`] whatever `limit` asks.
pub async fn versions<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    thread: ThreadId,
    limit: u32,
) -> Result<Vec<Summary>, StoreError> {
    versions_before(b, who, thread, None, limit).await
}

/// [`memlayer_ports::SummaryStore::summary_versions_before`]: at most
/// [`MAX_VERSIONS`] + 1 whatever `limit` asks.
pub async fn versions_before<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    thread: ThreadId,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<Summary>, StoreError> {
    let tenant = who.tenant();
    let t = tenant.clone();
    // One more than a page may hold: the caller learns whether more follow.
    let limit = limit.min(MAX_VERSIONS + 1);
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                last_seq(ex, &t, thread).await?;
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let rows =
                    ex.fetch("read summary versions", newest_before(ex.dialect(), thread, before, limit)).await?;
                rows.iter().map(|row| decode_summary(thread, row)).collect()
            })
        }),
    )
    .await
}

/// [`memlayer_ports::SummaryStore::save_summary`].
pub async fn save<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    thread: ThreadId,
    next: NewSummary,
    expected: u64,
) -> Result<Summary, StoreError> {
    let tenant = who.tenant();
    check_new_summary(&next)?;
    let expected_i = to_i64(expected, "expected")?;
    let stored_version = expected_i
        .checked_add(1)
        .ok_or_else(|| memlayer_domain::DomainError::new("expected", "is the last version the store keeps"))?;
    let newly = to_i64(next.newly_covered, "newly_covered")?;
    let at = now();
    let t = tenant.clone();
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let last = last_seq(ex, &t, thread).await?;
                let previous = newest_summary(ex, thread).await?;
                let seen = previous.as_ref().map_or(0, |s| s.version);
                if seen != expected {
                    return Err(StoreError::Conflict(format!("summary version is {seen}, expected {expected}")));
                }
                let (floor, covered) = previous.as_ref().map_or((0, 0), |s| (s.covers_through, s.covered_messages));
                if next.covers_through < floor {
                    return Err(memlayer_domain::DomainError::new(
                        "covers_through",
                        format!("is {}, below the previous summary's {floor}", next.covers_through),
                    )
                    .into());
                }
                if next.covers_through > last {
                    return Err(memlayer_domain::DomainError::new(
                        "covers_through",
                        format!("is {}, beyond the thread's last seq {last}", next.covers_through),
                    )
                    .into());
                }
                let covered = to_i64(covered, "covered_messages")?
                    .checked_add(newly)
                    .ok_or_else(|| memlayer_domain::DomainError::new("newly_covered", "overflows the count"))?;
                let d = ex.dialect();
                let mut sql = Sql::new(d);
                sql.push("INSERT INTO thread_summaries (");
                if d.tenant_on_every_table() {
                    sql.push("tenant, ");
                }
                sql.push("thread_id, ").push(SUMMARY_COLUMNS).push(") VALUES (");
                if d.tenant_on_every_table() {
                    sql.bind(t.as_str()).push(", ");
                }
                sql.bind(thread.as_uuid()).push(", ").bind(stored_version).push(", ").bind(next.text.as_str());
                sql.push(", ").bind(next.covers_through).push(", ").bind(covered);
                sql.push(", ").bind(next.summarizer.as_str()).push(", ").bind(at);
                sql.push(") ON CONFLICT (thread_id, version) DO NOTHING");
                if ex.execute("save summary", sql).await? == 0 {
                    return Err(StoreError::Conflict(format!(
                        "summary version moved past {expected} while saving (a concurrent summariser won)"
                    )));
                }
                Ok(Summary {
                    thread_id: thread,
                    version: expected + 1,
                    text: next.text,
                    covers_through: next.covers_through,
                    covered_messages: to_u64(covered, SUMMARIES, "covered_messages")?,
                    summarizer: next.summarizer,
                    created_at: at,
                })
            })
        }),
    )
    .await
}

/// The messages after `after` and their tokens (stored count, else the
/// content's bytes / 4 rounded up): a range search of `messages_thread_seq`.
pub fn backlog_sql(dialect: Dialect, thread: ThreadId, after: i64) -> Sql {
    let bytes = match dialect {
        Dialect::Sqlite => "length(CAST(content AS BLOB))",
        Dialect::Postgres => "octet_length(content)",
    };
    let mut sql = Sql::new(dialect);
    sql.push(&format!(
        "SELECT count(*), CAST(coalesce(sum(coalesce(token_count, ({bytes} + 3) / 4)), 0) AS BIGINT) \
         FROM messages WHERE thread_id = "
    ));
    sql.bind(thread.as_uuid()).push(" AND seq > ").bind(after);
    sql
}

/// [`memlayer_ports::SummaryQueue::summary_backlog`].
pub async fn backlog<B: Transactor>(b: &B, who: &dyn Reach, thread: ThreadId) -> Result<SummaryBacklog, StoreError> {
    let tenant = who.tenant();
    let t = tenant.clone();
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                last_seq(ex, &t, thread).await?;
                let (version, covers_through) =
                    newest_summary(ex, thread).await?.map_or((0, 0), |s| (s.version, s.covers_through));
                let row = ex
                    .fetch_one("count unsummarised messages", backlog_sql(ex.dialect(), thread, covers_through))
                    .await?
                    .ok_or_else(|| StoreError::backend("a count returned no row"))?;
                let r = Cells::new(&row, "messages");
                Ok(SummaryBacklog {
                    version,
                    covers_through,
                    messages: to_u64(r.int(0, "count")?, "messages", "count")?,
                    tokens: to_u64(r.int(1, "tokens")?, "messages", "token_count")?,
                })
            })
        }),
    )
    .await
}

const JOB_COLUMNS: &str = "j.due_at, j.attempts, j.last_error, j.leased_until, j.requests";
/// [`JOB_COLUMNS`] unqualified, for `RETURNING`.
const JOB_RETURNING: &str = "due_at, attempts, last_error, leased_until, requests";

/// A job from `row`, whose first columns are [`JOB_COLUMNS`].
fn decode_job(tenant: TenantId, thread: ThreadId, row: &Row) -> Result<SummaryJob, StoreError> {
    let r = Cells::new(row, JOBS);
    let leased_until = match row.get(3) {
        None | Some(SqlValue::Null) => None,
        Some(_) => Some(r.timestamp(3, "leased_until")?),
    };
    Ok(SummaryJob {
        tenant,
        thread,
        due_at: r.timestamp(0, "due_at")?,
        attempts: r.u32(1, "attempts")?,
        last_error: r.opt_text(2, "last_error")?,
        leased_until,
        requests: to_u64(r.int(4, "requests")?, JOBS, "requests")?,
    })
}

/// ` WHERE` the job of `thread`, when the thread is the tenant's.
fn job_of(sql: &mut Sql, tenant: &TenantId, thread: ThreadId) {
    sql.push(" WHERE thread_id = ").bind(thread.as_uuid());
    sql.push(" AND thread_id IN (SELECT id FROM threads WHERE tenant = ").bind(tenant.as_str());
    sql.push(" AND id = ").bind(thread.as_uuid()).push(")");
}

/// [`memlayer_ports::SummaryQueue::enqueue_summary`].
pub async fn enqueue<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    thread: ThreadId,
    due: Timestamp,
) -> Result<SummaryJob, StoreError> {
    let t = tenant.clone();
    b.write(
        tenant,
        Box::new(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let mut sql = Sql::new(d);
                sql.push("INSERT INTO summary_jobs (");
                if d.tenant_on_every_table() {
                    sql.push("tenant, ");
                }
                sql.push("thread_id, due_at, attempts, last_error, leased_until, requests, created_at) SELECT ");
                if d.tenant_on_every_table() {
                    sql.push("tenant, ");
                }
                sql.push("id, ").bind(due).push(", 0, NULL, NULL, 1, ").bind(now());
                sql.push(" FROM threads WHERE tenant = ").bind(t.as_str());
                sql.push(" AND id = ").bind(thread.as_uuid()).push(" AND deleted_at IS NULL");
                sql.push(" ON CONFLICT (thread_id) DO UPDATE SET requests = summary_jobs.requests + 1 RETURNING ");
                sql.push(JOB_RETURNING);
                let row =
                    ex.fetch_one("queue summary", sql).await?.ok_or_else(|| StoreError::not_found("thread", thread))?;
                decode_job(t, thread, &row)
            })
        }),
    )
    .await
}

/// [`memlayer_ports::SummaryQueue::claim_summary_jobs`]: the due jobs, then
/// one lease update each (`limit` is small: a worker's round).
pub async fn claim<B: Transactor>(
    b: &B,
    at: Timestamp,
    limit: u32,
    lease_until: Timestamp,
) -> Result<Vec<SummaryJob>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    b.write_all_tenants(Box::new(move |ex| {
        Box::pin(async move {
            let d = ex.dialect();
            // Fair across tenants: the due jobs numbered per tenant in due
            // order, and the batch takes every tenant's first, then second…
            // (a window over the due jobs: one per thread, so at most as
            // many rows as threads awaiting a summary). On Postgres each
            // row is locked as the walk in that order reaches it, and one a
            // concurrent claimer holds is skipped for the next (`LIMIT`
            // counts the locked rows only), so a claim never comes back
            // short while jobs it could take are due; the window itself is
            // a subquery the lock does not cover.
            let mut sql = Sql::new(d);
            let at_p = sql.arg(at);
            let due = format!(
                "t.deleted_at IS NULL AND j.due_at <= {at_p} AND (j.leased_until IS NULL OR j.leased_until <= {at_p})"
            );
            sql.push("SELECT ").push(JOB_COLUMNS).push(", t.tenant, t.id FROM summary_jobs j ");
            sql.push("JOIN threads t ON t.id = j.thread_id JOIN (SELECT j.thread_id, ");
            sql.push("row_number() OVER (PARTITION BY t.tenant ORDER BY j.due_at, j.thread_id) AS turn ");
            sql.push("FROM summary_jobs j JOIN threads t ON t.id = j.thread_id WHERE ").push(&due);
            sql.push(") AS f ON f.thread_id = j.thread_id WHERE ").push(&due);
            sql.push(" ORDER BY f.turn, j.due_at, j.thread_id LIMIT ").bind(limit);
            sql.push(match d {
                Dialect::Sqlite => "",
                Dialect::Postgres => " FOR UPDATE OF j SKIP LOCKED",
            });
            let rows = ex.fetch("claim summary jobs", sql).await?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in &rows {
                let r = Cells::new(row, JOBS);
                let tenant = r.parse(5, "tenant", TenantId::parse)?;
                let thread = ThreadId::from_uuid(r.uuid(6, "thread_id")?);
                let mut job = decode_job(tenant, thread, row)?;
                let mut lease = Sql::new(d);
                lease.push("UPDATE summary_jobs SET leased_until = ").bind(lease_until);
                lease.push(" WHERE thread_id = ").bind(thread.as_uuid());
                ex.execute("lease summary job", lease).await?;
                job.leased_until = Some(lease_until);
                jobs.push(job);
            }
            // Handed out earliest due first, whichever tenant.
            jobs.sort_by_key(|j| (j.due_at, j.thread));
            Ok(jobs)
        })
    }))
    .await
}

/// [`memlayer_ports::SummaryQueue::complete_summary_job`].
pub async fn complete<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    thread: ThreadId,
    requests: u64,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let requests = to_i64(requests, "requests")?;
    let t = tenant.clone();
    b.write(
        tenant,
        Box::new(move |ex| {
            Box::pin(async move {
                let d = ex.dialect();
                let mut delete = Sql::new(d);
                delete.push("DELETE FROM summary_jobs");
                job_of(&mut delete, &t, thread);
                delete.push(" AND requests = ").bind(requests);
                if ex.execute("complete summary job", delete).await? > 0 {
                    return Ok(true);
                }
                let mut again = Sql::new(d);
                again.push("UPDATE summary_jobs SET leased_until = NULL, attempts = 0, last_error = NULL, due_at = ");
                again.bind(at);
                job_of(&mut again, &t, thread);
                ex.execute("requeue summary job", again).await?;
                Ok(false)
            })
        }),
    )
    .await
}

/// [`memlayer_ports::SummaryQueue::fail_summary_job`].
pub async fn fail<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    thread: ThreadId,
    error: String,
    retry_at: Timestamp,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(b.dialect());
    sql.push("UPDATE summary_jobs SET attempts = attempts + 1, leased_until = NULL, last_error = ");
    sql.bind(cut_to_bytes(&error, MAX_SUMMARY_ERROR_BYTES)).push(", due_at = ").bind(retry_at);
    job_of(&mut sql, tenant, thread);
    b.write(tenant, Box::new(|ex| Box::pin(ex.execute("fail summary job", sql)))).await?;
    Ok(())
}

/// [`memlayer_ports::SummaryQueue::summary_job`].
pub async fn job<B: Transactor>(b: &B, who: &dyn Reach, thread: ThreadId) -> Result<Option<SummaryJob>, StoreError> {
    let tenant = who.tenant();
    let mut sql = Sql::new(b.dialect());
    sql.push("SELECT ").push(JOB_COLUMNS).push(" FROM summary_jobs j");
    job_of(&mut sql, tenant, thread);
    let t = tenant.clone();
    let row = b.read(who, Box::new(|ex| Box::pin(ex.fetch_one("read summary job", sql)))).await?;
    row.map(|row| decode_job(t, thread, &row)).transpose()
}

/// Implements `memlayer_ports::SummaryStore` and
/// `memlayer_ports::SummaryQueue` for a backend type that implements
/// [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! summary_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::SummaryStore for $backend {
            async fn current_summary(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
            ) -> Result<Option<::memlayer_domain::Summary>, ::memlayer_ports::StoreError> {
                $crate::summaries::current(self, who, thread).await
            }

            async fn save_summary(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                next: ::memlayer_domain::NewSummary,
                expected: u64,
            ) -> Result<::memlayer_domain::Summary, ::memlayer_ports::StoreError> {
                $crate::summaries::save(self, who, thread, next, expected).await
            }

            async fn summary_versions(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::Summary>, ::memlayer_ports::StoreError> {
                $crate::summaries::versions(self, who, thread, limit).await
            }

            async fn summary_versions_before(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
                before: Option<u64>,
                limit: u32,
            ) -> Result<Vec<::memlayer_domain::Summary>, ::memlayer_ports::StoreError> {
                $crate::summaries::versions_before(self, who, thread, before, limit).await
            }
        }

        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::SummaryQueue for $backend {
            async fn summary_backlog(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
            ) -> Result<::memlayer_ports::SummaryBacklog, ::memlayer_ports::StoreError> {
                $crate::summaries::backlog(self, who, thread).await
            }

            async fn enqueue_summary(
                &self,
                tenant: &::memlayer_domain::TenantId,
                thread: ::memlayer_domain::ThreadId,
                due: ::memlayer_domain::Timestamp,
            ) -> Result<::memlayer_ports::SummaryJob, ::memlayer_ports::StoreError> {
                $crate::summaries::enqueue(self, tenant, thread, due).await
            }

            async fn claim_summary_jobs(
                &self,
                now: ::memlayer_domain::Timestamp,
                limit: u32,
                lease_until: ::memlayer_domain::Timestamp,
            ) -> Result<Vec<::memlayer_ports::SummaryJob>, ::memlayer_ports::StoreError> {
                $crate::summaries::claim(self, now, limit, lease_until).await
            }

            async fn complete_summary_job(
                &self,
                tenant: &::memlayer_domain::TenantId,
                thread: ::memlayer_domain::ThreadId,
                requests: u64,
                now: ::memlayer_domain::Timestamp,
            ) -> Result<bool, ::memlayer_ports::StoreError> {
                $crate::summaries::complete(self, tenant, thread, requests, now).await
            }

            async fn fail_summary_job(
                &self,
                tenant: &::memlayer_domain::TenantId,
                thread: ::memlayer_domain::ThreadId,
                error: String,
                retry_at: ::memlayer_domain::Timestamp,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::summaries::fail(self, tenant, thread, error, retry_at).await
            }

            async fn summary_job(
                &self,
                who: &(dyn ::memlayer_domain::Reach + 'static),
                thread: ::memlayer_domain::ThreadId,
            ) -> Result<Option<::memlayer_ports::SummaryJob>, ::memlayer_ports::StoreError> {
                $crate::summaries::job(self, who, thread).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread() -> ThreadId {
        ThreadId::from_uuid(uuid::Uuid::nil())
    }

    #[test]
    fn the_backlog_is_a_range_of_one_thread_counted_per_dialect() {
        let s = backlog_sql(Dialect::Sqlite, thread(), 7);
        assert!(s.text().contains("length(CAST(content AS BLOB))"), "{}", s.text());
        assert!(s.text().ends_with("WHERE thread_id = ?1 AND seq > ?2"), "{}", s.text());
        let p = backlog_sql(Dialect::Postgres, thread(), 7);
        assert!(p.text().contains("octet_length(content)"), "{}", p.text());
        assert!(p.text().ends_with("WHERE thread_id = $1 AND seq > $2"), "{}", p.text());
        assert_eq!(p.args()[1], SqlValue::Int(7));
    }

    #[test]
    fn newest_reads_versions_newest_first() {
        let s = newest(Dialect::Postgres, thread(), 3);
        assert!(s.text().ends_with("ORDER BY version DESC LIMIT $2"), "{}", s.text());
    }
}
