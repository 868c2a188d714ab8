//! [`IdempotencyStore`] on libSQL (migration 6, `idempotency_records`).
//!
//! Every operation is one `IMMEDIATE` write transaction on the one writer
//! connection, so a claim's read and insert cannot interleave with another
//! claim's: of concurrent claims exactly one inserts.

use async_trait::async_trait;
use libsql::Value;
use memlayer_domain::{TenantId, Timestamp, to_micros};
use memlayer_ports::{
    Claim, Fingerprint, IdempotencyKey, IdempotencyStore, StoreError, StoredResponse, check_claim, check_response,
};

use crate::LibsqlBackend;
use crate::error::{Context as _, corrupt};
use crate::rows::{RowReader, query_row};
use crate::values::{blob, text};

const TABLE: &str = "idempotency_records";

/// What a claim finds: fingerprint, status (NULL in progress), body, expiry.
const FIND: &str = "SELECT fingerprint, status, body, expires_at FROM idempotency_records \
     WHERE tenant = ?1 AND idempotency_key = ?2";

#[async_trait]
impl IdempotencyStore for LibsqlBackend {
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Claim, StoreError> {
        check_claim(now, expires_at)?;
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        let (now, expires_at) = (to_micros(now), to_micros(expires_at));
        self.write(move |conn| async move {
            let found = query_row(&conn, "claim idempotency key", FIND, vec![text(&tenant), text(&key)], |row| {
                let r = RowReader::new(row, TABLE);
                let stored = Fingerprint::from_slice(&r.blob(0, "fingerprint")?)
                    .map_err(|e| corrupt(TABLE, "fingerprint", e))?;
                let status = r.opt_int(1, "status")?;
                let body = r.opt_blob(2, "body")?.unwrap_or_default();
                Ok((stored, status, body, r.int(3, "expires_at")?))
            })
            .await?;
            if let Some((stored, status, body, expires)) = found
                && expires > now
            {
                return Ok(if stored != fingerprint {
                    Claim::Mismatch
                } else {
                    match status {
                        None => Claim::InProgress,
                        Some(s) => Claim::Replay(StoredResponse {
                            status: u16::try_from(s).map_err(|e| corrupt(TABLE, "status", e))?,
                            body,
                        }),
                    }
                });
            }
            // Absent or expired: (re)place it with our claim.
            conn.execute(
                "INSERT INTO idempotency_records \
                 (tenant, idempotency_key, fingerprint, status, body, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, NULL, NULL, ?4, ?5) \
                 ON CONFLICT (tenant, idempotency_key) DO UPDATE SET \
                 fingerprint = excluded.fingerprint, status = NULL, body = NULL, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at",
                vec![
                    text(&tenant),
                    text(&key),
                    blob(fingerprint.as_bytes()),
                    Value::Integer(now),
                    Value::Integer(expires_at),
                ],
            )
            .await
            .ctx("claim idempotency key")?;
            Ok(Claim::New)
        })
        .await
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        check_response(&response)?;
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        self.write(move |conn| async move {
            let n = conn
                .execute(
                    "UPDATE idempotency_records SET status = ?4, body = ?5 \
                     WHERE tenant = ?1 AND idempotency_key = ?2 AND fingerprint = ?3 AND status IS NULL",
                    vec![
                        text(&tenant),
                        text(&key),
                        blob(fingerprint.as_bytes()),
                        Value::Integer(i64::from(response.status)),
                        Value::Blob(response.body),
                    ],
                )
                .await
                .ctx("complete idempotency key")?;
            if n == 0 {
                return Err(StoreError::not_found("idempotency claim", key));
            }
            Ok(())
        })
        .await
    }

    async fn release(
        &self,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<(), StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        self.write(move |conn| async move {
            let n = conn
                .execute(
                    "DELETE FROM idempotency_records \
                     WHERE tenant = ?1 AND idempotency_key = ?2 AND fingerprint = ?3 AND status IS NULL",
                    vec![text(&tenant), text(&key), blob(fingerprint.as_bytes())],
                )
                .await
                .ctx("release idempotency key")?;
            if n == 0 {
                return Err(StoreError::not_found("idempotency claim", key));
            }
            Ok(())
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let now = to_micros(now);
        self.write(move |conn| async move {
            conn.execute(
                "DELETE FROM idempotency_records WHERE rowid IN \
                 (SELECT rowid FROM idempotency_records WHERE expires_at <= ?1 LIMIT ?2)",
                vec![Value::Integer(now), Value::Integer(i64::from(limit))],
            )
            .await
            .ctx("purge idempotency records")
        })
        .await
    }
}
