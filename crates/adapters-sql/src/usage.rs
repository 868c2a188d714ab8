//! What each tenant stores, counted for its storage quota, written once:
//! the counters (`tenant_usage`, migration 11), the quota check run inside
//! the transaction of every write that adds to them, and the `UsageStore`
//! port ([`usage_store!`](crate::usage_store)).
//!
//! A tenant's usage is the sum of its rows in `tenant_usage`, one per
//! *shard* (`tenant`, `shard`): a write adds its [`Delta`] to the shard of
//! its thread ([`shard`]), in its own transaction, so the counts move
//! exactly with what is committed. libSQL has one shard (every write is
//! serial on its one writer, so a check reads exactly what is stored);
//! Postgres has [`PG_SHARDS`], so appends of one tenant's different threads
//! do not queue on one counter row until each commits.
//!
//! The check stays exact on Postgres, with a shared/exclusive lock per
//! tenant (an advisory lock, [`QUOTA_LOCK`]):
//! - every increment holds the tenant's lock *shared* (taken by the same
//!   statement that adds to its shard), so increments of different shards
//!   run side by side;
//! - a shared charge reads the sum: it sees its own increment and what is
//!   committed, not other increments in flight. At most one is in flight
//!   per other shard (the shard row is locked until commit), and a shared
//!   charge of more than [`FAST`] never passes, so the unseen part is at
//!   most `(PG_SHARDS - 1) × FAST`. The charge passes when even that fits
//!   under the limit, is refused when what it sees is already over it, and
//!   otherwise is *unsettled*: it takes back its increment, and the write
//!   starts again in exclusive mode;
//! - an exclusive charge takes the tenant's lock exclusively first, so no
//!   other increment is in flight, and its sum is exact.
//!
//! So no increment passes unless the committed total plus every increment
//! still in flight stays within the limit, and the last free slot is taken
//! exactly once. Far from a limit (or without one) a tenant's appends run
//! side by side; within `(PG_SHARDS - 1) × FAST` of it they take turns.
//! Decrements (deletes) need no check and take no lock.

use memlayer_domain::{Message, Quota, QuotaKind, TenantId, ThreadId, Usage};
use memlayer_ports::StoreError;

use crate::{Cells, Dialect, Executor, Sql, Transactor, corrupt};

/// Counter rows per tenant on Postgres.
pub const PG_SHARDS: i64 = 16;

/// The largest increment a shared charge may make, per dimension: one
/// thread, 100 messages, 1 MiB. Larger writes of a tenant with a limit on
/// that dimension take the exclusive path.
pub const FAST: Usage = Usage { threads: 1, messages: 100, bytes: 1 << 20 };

/// First key of the per-tenant quota lock on Postgres
/// (`pg_advisory_xact_lock[_shared](int, int)`; the second is the tenant's
/// hash). "mquo" in ASCII.
pub const QUOTA_LOCK: i32 = 0x6d71_756f;

/// Counter rows per tenant in `dialect`.
#[must_use]
pub fn shards(dialect: Dialect) -> i64 {
    match dialect {
        Dialect::Sqlite => 1,
        Dialect::Postgres => PG_SHARDS,
    }
}

/// The counter row of `thread`'s writes: the same for every write of a
/// thread (so a thread's shard never goes below zero), spread over the
/// shards by the id's random bits.
#[must_use]
pub fn shard(dialect: Dialect, thread: ThreadId) -> i64 {
    // UUIDv7's last 62 bits are random.
    let random = thread.as_uuid().as_u128() % (1 << 62);
    let n = u128::try_from(shards(dialect)).unwrap_or(1);
    i64::try_from(random % n).unwrap_or(0)
}

/// A change of a tenant's usage (negative for deletes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Live threads.
    pub threads: i64,
    /// Live messages.
    pub messages: i64,
    /// Their bytes ([`Message::approx_bytes`]).
    pub bytes: i64,
}

impl Delta {
    /// What storing `messages` adds.
    #[must_use]
    pub fn of_messages(messages: &[Message]) -> Self {
        Self { threads: 0, messages: len(messages.len()), bytes: messages.iter().map(stored_bytes).sum() }
    }

    /// One new thread.
    pub const THREAD: Delta = Delta { threads: 1, messages: 0, bytes: 0 };

    /// The opposite change.
    #[must_use]
    pub fn negated(self) -> Self {
        Self { threads: -self.threads, messages: -self.messages, bytes: -self.bytes }
    }

    /// The increase of `kind` (0 for a decrease).
    #[must_use]
    pub fn increase(&self, kind: QuotaKind) -> u64 {
        let v = match kind {
            QuotaKind::Threads => self.threads,
            QuotaKind::Messages => self.messages,
            QuotaKind::Bytes => self.bytes,
        };
        u64::try_from(v).unwrap_or(0)
    }

    /// The increases, as a usage.
    #[must_use]
    pub fn increases(&self) -> Usage {
        Usage {
            threads: self.increase(QuotaKind::Threads),
            messages: self.increase(QuotaKind::Messages),
            bytes: self.increase(QuotaKind::Bytes),
        }
    }

    /// Whether the change adds to a dimension `quota` limits.
    #[must_use]
    pub fn is_limited_by(&self, quota: &Quota) -> bool {
        QuotaKind::ALL.into_iter().any(|k| quota.limit(k).is_some() && self.increase(k) > 0)
    }
}

/// What a message counts against the byte quota, as stored in
/// `messages.stored_bytes`: [`Message::approx_bytes`].
#[must_use]
pub fn stored_bytes(m: &Message) -> i64 {
    i64::try_from(m.approx_bytes()).unwrap_or(i64::MAX)
}

fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `QuotaExceeded` for a write that alone passes a limit of `quota` (413),
/// checked before any transaction opens.
///
/// # Errors
/// That error.
pub fn check_size(quota: &Quota, delta: Delta) -> Result<(), StoreError> {
    match quota.too_large(&delta.increases()) {
        Some((kind, limit)) => {
            Err(StoreError::QuotaExceeded { quota: kind, limit, usage: 0, requested: delta.increase(kind) })
        }
        None => Ok(()),
    }
}

/// How a charge runs (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Beside the tenant's other increments; may end unsettled.
    Shared,
    /// Alone among the tenant's increments; always settles.
    Exclusive,
}

/// The modes a write tries, in order: [`Mode::Shared`] then
/// [`Mode::Exclusive`], or the exclusive mode alone when a shared charge
/// could never settle (the write adds more than [`FAST`] to a limited
/// dimension, or the limit is within the shared margin of zero), so it
/// does not pay for a transaction it would throw away.
#[must_use]
pub fn modes(dialect: Dialect, quota: &Quota, delta: Delta) -> &'static [Mode] {
    let unseen = u64::try_from(shards(dialect) - 1).unwrap_or(0);
    let hopeless = QuotaKind::ALL.into_iter().any(|kind| {
        let (requested, fast) = (delta.increase(kind), FAST.get(kind));
        quota.limit(kind).is_some_and(|limit| requested > 0 && (requested > fast || limit < unseen * fast))
    });
    if unseen > 0 && hopeless { &[Mode::Exclusive] } else { &[Mode::Shared, Mode::Exclusive] }
}

/// The outcome of a charge that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Charge {
    /// Counted and within the quota.
    Settled,
    /// A shared charge that could not decide alone: it took its increment
    /// back; the write must start again with [`Mode::Exclusive`].
    Unsettled,
}

/// Adds `delta` to the tenant's shard `shard`, creating the row; with
/// `shared_lock` (Postgres), taking the tenant's quota lock shared first, in
/// the same statement.
#[must_use]
pub fn add_sql(dialect: Dialect, tenant: &TenantId, shard: i64, delta: Delta, shared_lock: bool) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("INSERT INTO tenant_usage AS u (tenant, shard, threads, messages, bytes) SELECT ");
    // Typed: Postgres infers nothing from an `INSERT … SELECT`'s target.
    let t = sql.arg(tenant.as_str());
    sql.push(&format!("CAST({t} AS TEXT), CAST(")).bind(shard).push(" AS INTEGER), CAST(").bind(delta.threads);
    sql.push(" AS BIGINT), CAST(").bind(delta.messages).push(" AS BIGINT), CAST(").bind(delta.bytes);
    sql.push(" AS BIGINT)");
    if shared_lock {
        sql.push(&format!(" FROM (SELECT pg_advisory_xact_lock_shared({QUOTA_LOCK}, hashtext({t}))) AS quota_lock"));
    }
    // SQLite needs a WHERE for `ON CONFLICT` after a `SELECT` (its parser
    // cannot tell the upsert clause from a join constraint otherwise).
    sql.push(
        " WHERE true ON CONFLICT (tenant, shard) DO UPDATE SET threads = u.threads + excluded.threads, \
         messages = u.messages + excluded.messages, bytes = u.bytes + excluded.bytes",
    );
    sql
}

/// The tenant's usage: the sum of its shards.
#[must_use]
pub fn total_sql(dialect: Dialect, tenant: &TenantId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(
        "SELECT CAST(coalesce(sum(threads), 0) AS BIGINT), CAST(coalesce(sum(messages), 0) AS BIGINT), \
         CAST(coalesce(sum(bytes), 0) AS BIGINT) FROM tenant_usage WHERE tenant = ",
    )
    .bind(tenant.as_str());
    sql
}

/// Takes the tenant's quota lock exclusively (Postgres); `None` where every
/// write is serial anyway (libSQL).
#[must_use]
pub fn exclusive_sql(dialect: Dialect, tenant: &TenantId) -> Option<Sql> {
    match dialect {
        Dialect::Sqlite => None,
        Dialect::Postgres => {
            let mut sql = Sql::new(dialect);
            sql.push(&format!("SELECT pg_advisory_xact_lock({QUOTA_LOCK}, hashtext(")).bind(tenant.as_str()).push("))");
            Some(sql)
        }
    }
}

/// Reads a usage row of [`total_sql`].
fn decode(row: &[crate::SqlValue]) -> Result<Usage, StoreError> {
    let c = Cells::new(row, "tenant_usage");
    let get = |idx, column| {
        let v = c.int(idx, column)?;
        u64::try_from(v).map_err(|_| corrupt("tenant_usage", column, format!("negative total {v}")))
    };
    Ok(Usage { threads: get(0, "threads")?, messages: get(1, "messages")?, bytes: get(2, "bytes")? })
}

/// The tenant's usage, inside the caller's transaction.
///
/// # Errors
/// A failed read.
pub async fn total(ex: &dyn Executor, tenant: &TenantId) -> Result<Usage, StoreError> {
    let row = ex.fetch_one("read usage", total_sql(ex.dialect(), tenant)).await?;
    row.as_deref().map_or(Ok(Usage::default()), decode)
}

/// Counts `delta` (an increase) for `thread`'s write, inside the caller's
/// transaction, and checks `quota` (see the module's documentation).
///
/// # Errors
/// `QuotaExceeded` (the caller must roll back); a failed statement.
pub async fn charge(
    ex: &dyn Executor,
    tenant: &TenantId,
    thread: ThreadId,
    delta: Delta,
    quota: &Quota,
    mode: Mode,
) -> Result<Charge, StoreError> {
    let dialect = ex.dialect();
    let shard = shard(dialect, thread);
    let many = shards(dialect) > 1;
    if mode == Mode::Exclusive
        && let Some(lock) = exclusive_sql(dialect, tenant)
    {
        ex.execute("lock tenant quota", lock).await?;
    }
    ex.execute("count usage", add_sql(dialect, tenant, shard, delta, many && mode == Mode::Shared)).await?;
    if !delta.is_limited_by(quota) {
        return Ok(Charge::Settled);
    }
    let seen = total(ex, tenant).await?;
    let mut settled = true;
    for kind in QuotaKind::ALL {
        let (Some(limit), requested) = (quota.limit(kind), delta.increase(kind)) else { continue };
        if requested == 0 {
            continue;
        }
        let now = seen.get(kind);
        if now > limit {
            return Err(StoreError::QuotaExceeded {
                quota: kind,
                limit,
                usage: now.saturating_sub(requested),
                requested,
            });
        }
        if many && mode == Mode::Shared {
            let unseen = FAST.get(kind).saturating_mul(u64::try_from(shards(dialect) - 1).unwrap_or(u64::MAX));
            if requested > FAST.get(kind) || now.saturating_add(unseen) > limit {
                settled = false;
            }
        }
    }
    if settled {
        Ok(Charge::Settled)
    } else {
        // Still holding the shard row: take the increment back, so the
        // caller may commit or roll back alike.
        ex.execute("count usage", add_sql(dialect, tenant, shard, delta.negated(), false)).await?;
        Ok(Charge::Unsettled)
    }
}

/// Counts `delta` (a decrease: a delete) for `thread`, inside the caller's
/// transaction. No check, no lock beyond the shard row.
///
/// # Errors
/// A failed statement.
pub async fn release(ex: &dyn Executor, tenant: &TenantId, thread: ThreadId, delta: Delta) -> Result<(), StoreError> {
    let dialect = ex.dialect();
    ex.execute("count usage", add_sql(dialect, tenant, shard(dialect, thread), delta, false)).await?;
    Ok(())
}

/// `UsageStore::usage`.
///
/// # Errors
/// A failed read.
pub async fn usage<D: Transactor>(db: &D, tenant: &TenantId) -> Result<Usage, StoreError> {
    let owner = tenant.clone();
    db.read(tenant, Box::new(move |ex| Box::pin(async move { total(ex, &owner).await }))).await
}

/// Implements `memlayer_ports::UsageStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! usage_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::UsageStore for $backend {
            async fn usage(
                &self,
                tenant: &::memlayer_domain::TenantId,
            ) -> Result<::memlayer_domain::Usage, ::memlayer_ports::StoreError> {
                $crate::usage::usage(self, tenant).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqlValue;

    #[test]
    fn counters_render_per_dialect() {
        let tenant = TenantId::parse("acme").unwrap();
        let delta = Delta { threads: 0, messages: 2, bytes: 700 };
        let sql = add_sql(Dialect::Sqlite, &tenant, 0, delta, false);
        assert_eq!(
            sql.text(),
            "INSERT INTO tenant_usage AS u (tenant, shard, threads, messages, bytes) SELECT CAST(?1 AS TEXT), \
             CAST(?2 AS INTEGER), CAST(?3 AS BIGINT), CAST(?4 AS BIGINT), CAST(?5 AS BIGINT) WHERE true ON CONFLICT (tenant, shard) DO UPDATE SET threads = u.threads + excluded.threads, \
             messages = u.messages + excluded.messages, bytes = u.bytes + excluded.bytes"
        );
        assert_eq!(sql.args()[3], SqlValue::Int(2));
        let sql = add_sql(Dialect::Postgres, &tenant, 3, delta.negated(), true);
        assert!(sql.text().starts_with(
            "INSERT INTO tenant_usage AS u (tenant, shard, threads, messages, bytes) SELECT CAST($1 AS TEXT), \
             CAST($2 AS INTEGER), CAST($3 AS BIGINT), CAST($4 AS BIGINT), CAST($5 AS BIGINT) FROM (SELECT pg_advisory_xact_lock_shared(1836152175, hashtext($1))) AS quota_lock WHERE true"
        ));
        assert_eq!(sql.args()[4], SqlValue::Int(-700));
        assert!(exclusive_sql(Dialect::Sqlite, &tenant).is_none());
        assert_eq!(
            exclusive_sql(Dialect::Postgres, &tenant).unwrap().text(),
            "SELECT pg_advisory_xact_lock(1836152175, hashtext($1))"
        );
    }

    #[test]
    fn a_thread_keeps_one_shard() {
        let thread = ThreadId::new();
        assert_eq!(shard(Dialect::Sqlite, thread), 0);
        let s = shard(Dialect::Postgres, thread);
        assert!((0..PG_SHARDS).contains(&s));
        assert_eq!(s, shard(Dialect::Postgres, thread));
        let spread: std::collections::HashSet<i64> =
            (0..200).map(|_| shard(Dialect::Postgres, ThreadId::new())).collect();
        assert!(spread.len() > 8, "new threads spread over the shards: {spread:?}");
    }

    #[test]
    fn writes_that_could_never_settle_shared_start_exclusive() {
        let both: &[Mode] = &[Mode::Shared, Mode::Exclusive];
        let one = Delta { messages: 1, bytes: 400, ..Delta::default() };
        let big = Delta { messages: 101, bytes: 40_000, ..Delta::default() };
        let far = Quota { messages: Some(1_000_000), ..Quota::UNLIMITED };
        assert_eq!(modes(Dialect::Postgres, &far, one), both);
        assert_eq!(modes(Dialect::Postgres, &far, big), [Mode::Exclusive]);
        assert_eq!(modes(Dialect::Postgres, &Quota::UNLIMITED, big), both, "nothing limited");
        let small = Quota { messages: Some(1_000), ..Quota::UNLIMITED };
        assert_eq!(modes(Dialect::Postgres, &small, one), [Mode::Exclusive]);
        assert_eq!(modes(Dialect::Postgres, &small, Delta::THREAD), both, "threads are not limited");
        assert_eq!(modes(Dialect::Sqlite, &small, big), both, "one shard: a shared charge always settles");
    }

    #[test]
    fn a_write_larger_than_a_limit_is_refused_before_it_runs() {
        let quota = Quota { bytes: Some(1_000), ..Quota::UNLIMITED };
        assert!(check_size(&quota, Delta { threads: 0, messages: 1, bytes: 1_000 }).is_ok());
        let err = check_size(&quota, Delta { threads: 0, messages: 1, bytes: 1_001 }).unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert!(!Delta::THREAD.is_limited_by(&quota) && Delta { bytes: 1, ..Delta::default() }.is_limited_by(&quota));
        assert!(!Delta { bytes: -5, ..Delta::default() }.is_limited_by(&quota));
    }
}
