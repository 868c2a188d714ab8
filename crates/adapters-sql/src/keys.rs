//! The API key store (migration 10, `api_keys`), written once for both
//! backends: statements from [`crate::table::API_KEYS`], one row decoder.
//!
//! A key is found by its id before its tenant is known. On libSQL that is a
//! plain read by primary key; on Postgres, whose row-level security admits
//! only the transaction's tenant, the read goes through the migration's
//! `memlayer_find_api_key(id)`, which returns at most that one row whatever
//! the transaction's tenant (the choice is explained in the migration and
//! in docs/ARCHITECTURE.md). Listing and revoking stay within the tenant
//! (and its policy); last uses are recorded with cross-tenant access, by id,
//! one statement per [`USES_PER_STATEMENT`] keys.

use std::collections::HashMap;

use memlayer_domain::{ApiKey, DomainError, KeyId, ResourceId, Scopes, TenantId, Timestamp};
use memlayer_ports::{KeyListing, SecretHash, StoreError};

use crate::exec::Transactor;
use crate::table::API_KEYS;
use crate::{Cells, Dialect, Sql, SqlValue, corrupt};

const TABLE: &str = "api_keys";

/// Most keys one `record_key_use` statement updates (two parameters each,
/// far below SQLite's limit); a larger batch is several statements in one
/// transaction.
pub const USES_PER_STATEMENT: usize = 500;

/// The columns of a key's record, `tenant` first, then the described
/// columns up to (not including) `secret_hash`.
fn record_columns() -> String {
    let described = API_KEYS.columns.iter().map(|c| c.name).filter(|c| *c != "secret_hash");
    std::iter::once("tenant").chain(described).collect::<Vec<_>>().join(", ")
}

/// A lookup by id: from the table on libSQL, from the function that reads
/// across tenants on Postgres.
#[must_use]
pub fn find_sql(dialect: Dialect, id: &KeyId) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!("SELECT {}, secret_hash FROM ", record_columns()));
    match dialect {
        Dialect::Sqlite => sql.push("api_keys WHERE id = ").bind(id.as_str()),
        Dialect::Postgres => sql.push("memlayer_find_api_key(").bind(id.as_str()).push(")"),
    };
    sql
}

fn opt_timestamp(row: &[SqlValue], idx: usize, column: &'static str) -> Result<Option<Timestamp>, StoreError> {
    match row.get(idx) {
        Some(SqlValue::Null) => Ok(None),
        _ => Cells::new(row, TABLE).timestamp(idx, column).map(Some),
    }
}

/// A key's record from a row of [`record_columns`].
fn decode(row: &[SqlValue]) -> Result<ApiKey, StoreError> {
    let c = Cells::new(row, TABLE);
    Ok(ApiKey {
        tenant: c.parse(0, "tenant", TenantId::parse)?,
        id: c.parse(1, "id", KeyId::parse)?,
        name: c.opt_text(2, "name")?,
        scopes: c.parse(3, "scopes", |s| Scopes::parse_list(&s))?,
        resource: c
            .opt_text(4, "resource_id")?
            .map(ResourceId::parse)
            .transpose()
            .map_err(|e| corrupt(TABLE, "resource_id", e))?,
        created_at: c.timestamp(5, "created_at")?,
        expires_at: opt_timestamp(row, 6, "expires_at")?,
        revoked_at: opt_timestamp(row, 7, "revoked_at")?,
        last_used_at: opt_timestamp(row, 8, "last_used_at")?,
    })
}

/// A record and its secret's hash, from a row of [`find_sql`].
fn decode_with_hash(row: &[SqlValue]) -> Result<(ApiKey, SecretHash), StoreError> {
    let key = decode(row)?;
    let hash = Cells::new(row, TABLE).blob(9, "secret_hash")?;
    let hash = SecretHash::try_from(hash.as_slice())
        .map_err(|_| corrupt(TABLE, "secret_hash", format!("expected 32 bytes, found {}", hash.len())))?;
    Ok((key, hash))
}

/// [`memlayer_ports::KeyStore::create_key`].
pub async fn create_key<B: Transactor>(b: &B, key: &ApiKey, secret_hash: &SecretHash) -> Result<(), StoreError> {
    let mut sql = Sql::new(b.dialect());
    // In the described column order.
    let values = vec![
        SqlValue::from(key.id.as_str()),
        SqlValue::from(key.name.clone()),
        SqlValue::from(key.scopes.to_string()),
        SqlValue::from(key.resource.as_ref().map(|r| r.as_str().to_owned())),
        SqlValue::from(key.created_at),
        SqlValue::from(key.expires_at),
        SqlValue::from(key.revoked_at),
        SqlValue::from(key.last_used_at),
        SqlValue::Blob(secret_hash.to_vec()),
    ];
    API_KEYS.insert(&mut sql, key.tenant.as_str(), values);
    b.write(&key.tenant, Box::new(|ex| Box::pin(ex.execute("create API key", sql)))).await?;
    Ok(())
}

/// [`memlayer_ports::KeyStore::find_key`]. The transaction is bound to the
/// default tenant only because every transaction names one: the statement
/// reads by id alone (see the module doc).
pub async fn find_key<B: Transactor>(b: &B, id: &KeyId) -> Result<Option<(ApiKey, SecretHash)>, StoreError> {
    let sql = find_sql(b.dialect(), id);
    let row = b.read(&TenantId::default_tenant(), Box::new(|ex| Box::pin(ex.fetch_one("find API key", sql)))).await?;
    row.map(|r| decode_with_hash(&r)).transpose()
}

/// A tenant's keys, newest first (the index `api_keys_tenant`).
#[must_use]
pub fn list_sql(dialect: Dialect, tenant: &TenantId, listing: &KeyListing) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push(&format!("SELECT {} FROM api_keys WHERE tenant = ", record_columns())).bind(tenant.as_str());
    if let Some(r) = &listing.resource {
        sql.push(" AND resource_id = ").bind(r.as_str());
    }
    if let Some(after) = &listing.after {
        // Keys are never deleted (only revoked), so the cursor's key is
        // still there to say where its page ended.
        sql.push(" AND (created_at, id) < (SELECT created_at, id FROM api_keys WHERE tenant = ")
            .bind(tenant.as_str())
            .push(" AND id = ")
            .bind(after.as_str())
            .push(")");
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").bind(i64::from(listing.limit.max(1)));
    sql
}

/// [`memlayer_ports::KeyStore::list_keys`]: newest first, one page.
pub async fn list_keys<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    listing: &KeyListing,
) -> Result<Vec<ApiKey>, StoreError> {
    let sql = list_sql(b.dialect(), tenant, listing);
    let check = listing.after.as_ref().map(|after| {
        let mut sql = Sql::new(b.dialect());
        sql.push("SELECT 1 FROM api_keys WHERE tenant = ").bind(tenant.as_str());
        sql.push(" AND id = ").bind(after.as_str());
        sql
    });
    let (rows, known) = b
        .read(
            tenant,
            Box::new(|ex| {
                Box::pin(async move {
                    let rows = ex.fetch("list API keys", sql).await?;
                    let known = match check {
                        Some(check) if rows.is_empty() => {
                            ex.fetch_one("find the listing's cursor key", check).await?.is_some()
                        }
                        _ => true,
                    };
                    Ok((rows, known))
                })
            }),
        )
        .await?;
    if !known {
        return Err(StoreError::Invalid(DomainError::new("after", "names no API key of this tenant")));
    }
    rows.iter().map(|r| decode(r)).collect()
}

/// [`memlayer_ports::KeyStore::revoke_key`]: the first revocation's time stays.
pub async fn revoke_key<B: Transactor>(
    b: &B,
    tenant: &TenantId,
    id: &KeyId,
    at: Timestamp,
) -> Result<ApiKey, StoreError> {
    let mut sql = Sql::new(b.dialect());
    sql.push("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ").bind(at).push(")");
    sql.push(" WHERE tenant = ").bind(tenant.as_str()).push(" AND id = ").bind(id.as_str());
    sql.push(&format!(" RETURNING {}", record_columns()));
    let row = b.write(tenant, Box::new(|ex| Box::pin(ex.fetch_one("revoke API key", sql)))).await?;
    row.map(|r| decode(&r)).transpose()?.ok_or_else(|| StoreError::not_found("API key", id))
}

/// The statement recording `uses` (distinct ids): each key's
/// `last_used_at` moves forward to its time, never back.
#[must_use]
pub fn uses_sql(dialect: Dialect, uses: &[(&KeyId, Timestamp)]) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("UPDATE api_keys SET last_used_at = v.column2 FROM (VALUES ");
    for (i, (id, at)) in uses.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" }).bind(id.as_str()).push(", ");
        match dialect {
            Dialect::Sqlite => sql.bind(*at),
            // A VALUES parameter's type is not inferred from its use.
            Dialect::Postgres => sql.push("CAST(").bind(*at).push(" AS timestamptz)"),
        };
        sql.push(")");
    }
    sql.push(
        ") AS v WHERE api_keys.id = v.column1 \
         AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.column2)",
    );
    sql
}

/// [`memlayer_ports::KeyStore::record_key_use`]: the latest time per id,
/// [`USES_PER_STATEMENT`] keys per statement, all in one transaction.
pub async fn record_key_use<B: Transactor>(b: &B, uses: &[(KeyId, Timestamp)]) -> Result<(), StoreError> {
    let mut latest: HashMap<&KeyId, Timestamp> = HashMap::with_capacity(uses.len());
    for (id, at) in uses {
        latest.entry(id).and_modify(|t| *t = (*t).max(*at)).or_insert(*at);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let mut latest: Vec<(&KeyId, Timestamp)> = latest.into_iter().collect();
    latest.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let dialect = b.dialect();
    let statements: Vec<Sql> = latest.chunks(USES_PER_STATEMENT).map(|chunk| uses_sql(dialect, chunk)).collect();
    b.write_all_tenants(Box::new(|ex| {
        Box::pin(async move {
            for sql in statements {
                ex.execute("record API key use", sql).await?;
            }
            Ok(())
        })
    }))
    .await
}

/// Implements `memlayer_ports::KeyStore` for a backend type that implements
/// [`Transactor`], delegating to this module.
#[macro_export]
macro_rules! key_store {
    ($backend:ty) => {
        #[$crate::reexport::async_trait]
        impl ::memlayer_ports::KeyStore for $backend {
            async fn create_key(
                &self,
                key: &::memlayer_domain::ApiKey,
                secret_hash: &::memlayer_ports::SecretHash,
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::keys::create_key(self, key, secret_hash).await
            }

            async fn find_key(
                &self,
                id: &::memlayer_domain::KeyId,
            ) -> Result<Option<(::memlayer_domain::ApiKey, ::memlayer_ports::SecretHash)>, ::memlayer_ports::StoreError>
            {
                $crate::keys::find_key(self, id).await
            }

            async fn list_keys(
                &self,
                tenant: &::memlayer_domain::TenantId,
                listing: &::memlayer_ports::KeyListing,
            ) -> Result<Vec<::memlayer_domain::ApiKey>, ::memlayer_ports::StoreError> {
                $crate::keys::list_keys(self, tenant, listing).await
            }

            async fn revoke_key(
                &self,
                tenant: &::memlayer_domain::TenantId,
                id: &::memlayer_domain::KeyId,
                at: ::memlayer_domain::Timestamp,
            ) -> Result<::memlayer_domain::ApiKey, ::memlayer_ports::StoreError> {
                $crate::keys::revoke_key(self, tenant, id, at).await
            }

            async fn record_key_use(
                &self,
                uses: &[(::memlayer_domain::KeyId, ::memlayer_domain::Timestamp)],
            ) -> Result<(), ::memlayer_ports::StoreError> {
                $crate::keys::record_key_use(self, uses).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use memlayer_domain::from_micros;

    use super::*;

    fn id(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    #[test]
    fn a_lookup_by_id_reads_the_table_on_libsql_and_the_function_on_postgres() {
        let cols = "tenant, id, name, scopes, resource_id, created_at, expires_at, revoked_at, last_used_at";
        let sql = find_sql(Dialect::Sqlite, &id("0123456789abcdef"));
        assert_eq!(sql.text(), format!("SELECT {cols}, secret_hash FROM api_keys WHERE id = ?1"));
        let sql = find_sql(Dialect::Postgres, &id("0123456789abcdef"));
        assert_eq!(sql.text(), format!("SELECT {cols}, secret_hash FROM memlayer_find_api_key($1)"));
        assert_eq!(sql.args(), [SqlValue::from("0123456789abcdef")]);
    }

    #[test]
    fn last_uses_are_one_statement_that_only_moves_forward() {
        let (a, b) = (id("000000000000000a"), id("000000000000000b"));
        let t = from_micros(1_700_000_000_000_000);
        let sql = uses_sql(Dialect::Sqlite, &[(&a, t), (&b, t)]);
        assert_eq!(
            sql.text(),
            "UPDATE api_keys SET last_used_at = v.column2 FROM (VALUES (?1, ?2), (?3, ?4)) AS v \
             WHERE api_keys.id = v.column1 AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.column2)"
        );
        let sql = uses_sql(Dialect::Postgres, &[(&a, t)]);
        assert!(sql.text().contains("(VALUES ($1, CAST($2 AS timestamptz))) AS v"), "{}", sql.text());
    }

    #[test]
    fn a_listing_never_selects_the_hash() {
        assert!(!record_columns().contains("secret_hash"));
        assert_eq!(API_KEYS.columns.last().map(|c| c.name), Some("secret_hash"));
    }
}
