//! [`IdempotencyStore`] on Postgres (migration 6, `idempotency_records`,
//! under the tenant row-level security policy).
//!
//! A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE expired`: the
//! primary key makes concurrent claims of one absent key wait for each other
//! and exactly one insert; a live record is locked, then read.

use async_trait::async_trait;
use memlayer_domain::{TenantId, Timestamp};
use memlayer_ports::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyStore, StoreError, StoredResponse, check_claim, check_response,
};

use crate::PgBackend;
use crate::backend::{Access, begin};
use crate::error::{Context as _, corrupt};
use crate::rows::RowReader;

const TABLE: &str = "idempotency_records";

/// Inserts the claim, or replaces an expired record; returns a row exactly
/// when the caller now holds the claim.
const CLAIM: &str = "INSERT INTO idempotency_records \
     (tenant, idempotency_key, fingerprint, status, body, created_at, expires_at) \
     VALUES ($1, $2, $3, NULL, NULL, $4, $5) \
     ON CONFLICT (tenant, idempotency_key) DO UPDATE SET \
     fingerprint = EXCLUDED.fingerprint, status = NULL, body = NULL, \
     created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at \
     WHERE idempotency_records.expires_at <= $4 \
     RETURNING 1";

const FIND: &str = "SELECT fingerprint, status, body FROM idempotency_records \
     WHERE tenant = $1 AND idempotency_key = $2";

#[async_trait]
impl IdempotencyStore for PgBackend {
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Claim, StoreError> {
        check_claim(now, expires_at)?;
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let digest: &[u8] = fingerprint.as_bytes();
        let claim = tx.prepare_cached(CLAIM).await.ctx("claim idempotency key")?;
        let inserted = tx
            .query_opt(&claim, &[&tenant.as_str(), &key.as_str(), &digest, &now, &expires_at])
            .await
            .ctx("claim idempotency key")?;
        if inserted.is_some() {
            tx.commit().await.ctx("claim idempotency key")?;
            return Ok(Claim::New);
        }
        // A live record, locked by the ON CONFLICT above: read it.
        let find = tx.prepare_cached(FIND).await.ctx("claim idempotency key")?;
        let row = tx
            .query_opt(&find, &[&tenant.as_str(), &key.as_str()])
            .await
            .ctx("claim idempotency key")?
            .ok_or_else(|| StoreError::Unavailable("idempotency record vanished during its claim; retry".into()))?;
        tx.commit().await.ctx("claim idempotency key")?;
        let r = RowReader::new(&row, TABLE);
        let stored =
            Fingerprint::from_slice(&r.get::<Vec<u8>>("fingerprint")?).map_err(|e| corrupt(TABLE, "fingerprint", e))?;
        if stored != fingerprint {
            return Ok(Claim::Mismatch);
        }
        Ok(match r.get::<Option<i32>>("status")? {
            None => Claim::InProgress,
            Some(status) => Claim::Replay(StoredResponse {
                status: u16::try_from(status).map_err(|e| corrupt(TABLE, "status", e))?,
                body: r.get::<Option<Vec<u8>>>("body")?.unwrap_or_default(),
            }),
        })
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        check_response(&response)?;
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let digest: &[u8] = fingerprint.as_bytes();
        let stmt = tx
            .prepare_cached(
                "UPDATE idempotency_records SET status = $4, body = $5 \
                 WHERE tenant = $1 AND idempotency_key = $2 AND fingerprint = $3 AND status IS NULL",
            )
            .await
            .ctx("complete idempotency key")?;
        let n = tx
            .execute(
                &stmt,
                &[&tenant.as_str(), &key.as_str(), &digest, &i32::from(response.status), &response.body.as_slice()],
            )
            .await
            .ctx("complete idempotency key")?;
        if n == 0 {
            return Err(StoreError::not_found("idempotency claim", key));
        }
        tx.commit().await.ctx("complete idempotency key")
    }

    async fn release(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::Tenant(tenant)).await?;
        let digest: &[u8] = fingerprint.as_bytes();
        let stmt = tx
            .prepare_cached(
                "DELETE FROM idempotency_records \
                 WHERE tenant = $1 AND idempotency_key = $2 AND fingerprint = $3 AND status IS NULL",
            )
            .await
            .ctx("release idempotency key")?;
        let n = tx.execute(&stmt, &[&tenant.as_str(), &key.as_str(), &digest]).await.ctx("release idempotency key")?;
        if n == 0 {
            return Err(StoreError::not_found("idempotency claim", key));
        }
        tx.commit().await.ctx("release idempotency key")
    }

    async fn purge_expired(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, Access::All).await?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM idempotency_records WHERE (tenant, idempotency_key) IN \
                 (SELECT tenant, idempotency_key FROM idempotency_records WHERE expires_at <= $1 \
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await
            .ctx("purge idempotency records")?;
        let n = tx.execute(&stmt, &[&now, &i64::from(limit)]).await.ctx("purge idempotency records")?;
        tx.commit().await.ctx("purge idempotency records")?;
        Ok(n)
    }
}
