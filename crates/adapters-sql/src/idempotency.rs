//! The `Idempotency-Key` record store (migration 6, `idempotency_records`),
//! written once for both backends.
//!
//! A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE expired
//! RETURNING`: a row comes back exactly when the caller now holds the claim
//! (the key was absent, or its record had expired and is replaced). On
//! Postgres the primary key makes concurrent claims of one absent key wait
//! for each other and exactly one insert, and a live record is locked by the
//! conflict, then read; on libSQL every write is serial on its one writer.

use memlayer_domain::{TenantId, Timestamp};
use memlayer_ports::{Claim, Fingerprint, IdempotencyKey, StoreError, StoredResponse, check_claim, check_response};

use crate::exec::Transactor;
use crate::{Cells, Dialect, Sql, SqlValue, corrupt};

const TABLE: &str = "idempotency_records";

fn key_of(sql: &mut Sql, tenant: &TenantId, key: &IdempotencyKey, fingerprint: Option<Fingerprint>) {
    sql.push(" WHERE tenant = ").bind(tenant.as_str()).push(" AND idempotency_key = ").bind(key.as_str());
    if let Some(f) = fingerprint {
        sql.push(" AND fingerprint = ").bind(SqlValue::Blob(f.as_bytes().to_vec())).push(" AND status IS NULL");
    }
}

/// [`memlayer_ports::IdempotencyStore::claim`].
pub async fn claim<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<Claim, StoreError> {
    check_claim(now, expires_at)?;
    let mut insert = Sql::new(b.dialect());
    insert.push(
        "INSERT INTO idempotency_records \
         (tenant, idempotency_key, fingerprint, status, body, created_at, expires_at) VALUES (",
    );
    insert.bind(tenant.as_str()).push(", ").bind(key.as_str()).push(", ");
    insert.bind(SqlValue::Blob(fingerprint.as_bytes().to_vec())).push(", NULL, NULL, ");
    let at = insert.arg(now);
    insert.push(&at).push(", ").bind(expires_at);
    insert.push(&format!(
        ") ON CONFLICT (tenant, idempotency_key) DO UPDATE SET \
         fingerprint = excluded.fingerprint, status = NULL, body = NULL, \
         created_at = excluded.created_at, expires_at = excluded.expires_at \
         WHERE idempotency_records.expires_at <= {at} RETURNING 1"
    ));
    let mut find = Sql::new(b.dialect());
    find.push("SELECT fingerprint, status, body FROM idempotency_records");
    key_of(&mut find, tenant, key, None);
    let row = b
        .write(
            tenant,
            Box::new(move |ex| {
                Box::pin(async move {
                    if ex.fetch_one("claim idempotency key", insert).await?.is_some() {
                        return Ok(None);
                    }
                    // A live record (on Postgres locked by the conflict): read it.
                    let row = ex.fetch_one("claim idempotency key", find).await?.ok_or_else(|| {
                        StoreError::Unavailable("idempotency record vanished during its claim; retry".into())
                    })?;
                    Ok(Some(row))
                })
            }),
        )
        .await?;
    let Some(row) = row else { return Ok(Claim::New) };
    let r = Cells::new(&row, TABLE);
    let stored = Fingerprint::from_slice(&r.blob(0, "fingerprint")?).map_err(|e| corrupt(TABLE, "fingerprint", e))?;
    if stored != fingerprint {
        return Ok(Claim::Mismatch);
    }
    Ok(match r.opt_int(1, "status")? {
        None => Claim::InProgress,
        Some(status) => Claim::Replay(StoredResponse {
            status: u16::try_from(status).map_err(|e| corrupt(TABLE, "status", e))?,
            body: r.opt_blob(2, "body")?.unwrap_or_default(),
        }),
    })
}

/// [`memlayer_ports::IdempotencyStore::complete`].
pub async fn complete<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    response: StoredResponse,
) -> Result<(), StoreError> {
    check_response(&response)?;
    let mut sql = Sql::new(b.dialect());
    sql.push("UPDATE idempotency_records SET status = ").bind(i64::from(response.status));
    sql.push(", body = ").bind(SqlValue::Blob(response.body));
    key_of(&mut sql, tenant, key, Some(fingerprint));
    let n = b.write(tenant, Box::new(|ex| Box::pin(ex.execute("complete idempotency key", sql)))).await?;
    if n == 0 {
        return Err(StoreError::not_found("idempotency claim", key));
    }
    Ok(())
}

/// [`memlayer_ports::IdempotencyStore::release`].
pub async fn release<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(b.dialect());
    sql.push("DELETE FROM idempotency_records");
    key_of(&mut sql, tenant, key, Some(fingerprint));
    let n = b.write(tenant, Box::new(|ex| Box::pin(ex.execute("release idempotency key", sql)))).await?;
    if n == 0 {
        return Err(StoreError::not_found("idempotency claim", key));
    }
    Ok(())
}

/// [`memlayer_ports::IdempotencyStore::purge_expired`]: at most `limit`
/// expired records of any tenant (on Postgres skipping rows another purge
/// holds).
pub async fn purge_expired<B: Transactor>(b: &B, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
    let mut sql = Sql::new(b.dialect());
    sql.push(
        "DELETE FROM idempotency_records WHERE (tenant, idempotency_key) IN \
         (SELECT tenant, idempotency_key FROM idempotency_records WHERE expires_at <= ",
    );
    sql.bind(now).push(" LIMIT ").bind(i64::from(limit));
    sql.push(match b.dialect() {
        Dialect::Sqlite => ")",
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED)",
    });
    b.write_all_tenants(Box::new(|ex| Box::pin(ex.execute("purge idempotency records", sql)))).await
}

/// Implements `memlayer_ports::IdempotencyStore` for a backend type that
/// implements [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! idempotency_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::IdempotencyStore for $backend {
            async fn claim(
                &self,
                tenant: &::memlayer_domain::TenantId,
                key: &::memlayer_ports::IdempotencyKey,
                fingerprint: ::memlayer_ports::Fingerprint,
                now: ::memlayer_domain::Timestamp,
                expires_at: ::memlayer_domain::Timestamp,
            ) -> Result<::memlayer_ports::Claim, ::memlayer_ports::StoreError> {
                $crate::idempotency::claim(self, tenant, key, fingerprint, now, expires_at).await
            }

            async fn complete(
                &self,
                tenant: &::memlayer_domain::TenantId,
                key: &::memlayer_ports::IdempotencyKey,
                fingerprint: ::memlayer_ports::Fingerprint,
                response: ::memlayer_ports::StoredResponse,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::idempotency::complete(self, tenant, key, fingerprint, response).await
            }

            async fn release(
                &self,
                tenant: &::memlayer_domain::TenantId,
                key: &::memlayer_ports::IdempotencyKey,
                fingerprint: ::memlayer_ports::Fingerprint,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::idempotency::release(self, tenant, key, fingerprint).await
            }

            async fn purge_expired(
                &self,
                now: ::memlayer_domain::Timestamp,
                limit: u32,
            ) -> Result<u64, ::memlayer_ports::StoreError> {
                $crate::idempotency::purge_expired(self, now, limit).await
            }
        }
    };
}
