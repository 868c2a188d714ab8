//! Token counts of messages per encoding (`message_tokens`, migration 15),
//! written once for both backends: a message's count under an encoding
//! other than the one it was appended with, stored the first time context
//! assembly needs it, so no later assembly tokenises that message again.
//! A message's text never changes, so neither does a stored count: a second
//! write of the same message and encoding keeps the first. Rows go with
//! their message (a foreign key with `ON DELETE CASCADE`), and a deleted
//! thread's messages are left out of every read at once.

use memlayer_domain::{DomainError, MessageId, Reach, TenantId};
use memlayer_ports::StoreError;

use crate::exec::Transactor;
use crate::{Cells, Dialect, Sql};

/// Most messages per statement (each binds one or two values; well within
/// SQLite's and Postgres's parameter limits).
pub const PER_STATEMENT: usize = 500;

/// Longest encoding name accepted.
pub const MAX_ENCODING_BYTES: usize = 64;

fn check_encoding(encoding: &str) -> Result<(), StoreError> {
    if encoding.is_empty() || encoding.len() > MAX_ENCODING_BYTES {
        return Err(DomainError::new("encoding", format!("must be 1 to {MAX_ENCODING_BYTES} bytes")).into());
    }
    Ok(())
}

/// The read of one chunk: the stored counts of `ids` under `encoding`,
/// for messages of live threads of `tenant`.
#[must_use]
pub fn read_sql(dialect: Dialect, tenant: &TenantId, encoding: &str, ids: &[MessageId]) -> Sql {
    // CROSS JOIN keeps SQLite's join order: the counts by primary key, then
    // each one's message and thread by theirs; never the tenant's threads
    // and all their messages first.
    let mut sql = Sql::new(dialect).dynamic();
    sql.push("SELECT c.message_id, c.tokens FROM message_tokens c CROSS JOIN messages m CROSS JOIN threads t ")
        .push("WHERE c.message_id IN (")
        .bind_list(ids.iter().map(|id| id.as_uuid()))
        .push(") AND c.encoding = ")
        .bind(encoding)
        .push(" AND m.id = c.message_id AND t.id = m.thread_id AND t.tenant = ")
        .bind(tenant.as_str())
        .push(" AND t.deleted_at IS NULL");
    sql
}

/// The write of one chunk: each count whose message exists in a live
/// thread of `tenant`, unless one is stored already.
#[must_use]
pub fn write_sql(dialect: Dialect, tenant: &TenantId, encoding: &str, counts: &[(MessageId, u32)]) -> Sql {
    let mut sql = Sql::new(dialect).dynamic();
    let tenant_column = dialect.tenant_on_every_table();
    sql.push(if tenant_column {
        "INSERT INTO message_tokens (tenant, message_id, encoding, tokens) SELECT t.tenant, m.id, "
    } else {
        "INSERT INTO message_tokens (message_id, encoding, tokens) SELECT m.id, "
    });
    sql.bind(encoding).push(", v.column2 FROM (VALUES ");
    for (i, (id, n)) in counts.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        match dialect {
            Dialect::Sqlite => sql.bind(id.as_uuid()).push(", ").bind(*n),
            // A VALUES parameter's type is not inferred from its use.
            Dialect::Postgres => {
                sql.push("CAST(").bind(id.as_uuid()).push(" AS uuid), CAST(").bind(*n).push(" AS bigint)")
            }
        };
        sql.push(")");
    }
    // CROSS JOIN keeps SQLite's join order: the values first, each one's
    // message and thread by primary key.
    sql.push(") AS v CROSS JOIN messages m CROSS JOIN threads t WHERE m.id = v.column1 AND t.id = m.thread_id")
        .push(" AND t.tenant = ")
        .bind(tenant.as_str())
        .push(" AND t.deleted_at IS NULL ON CONFLICT (message_id, encoding) DO NOTHING");
    sql
}

/// [`memlayer_ports::MessageStore::token_counts`].
pub async fn token_counts<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    encoding: &str,
    ids: Vec<MessageId>,
) -> Result<Vec<(MessageId, u32)>, StoreError> {
    check_encoding(encoding)?;
    let tenant = who.tenant();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = b.dialect();
    let statements: Vec<Sql> = ids.chunks(PER_STATEMENT).map(|c| read_sql(dialect, tenant, encoding, c)).collect();
    b.read(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                let mut out = Vec::new();
                for sql in statements {
                    for row in ex.fetch("read token counts", sql).await? {
                        let r = Cells::new(&row, "message_tokens");
                        out.push((MessageId::from_uuid(r.uuid(0, "message_id")?), r.u32(1, "tokens")?));
                    }
                }
                Ok(out)
            })
        }),
    )
    .await
}

/// [`memlayer_ports::MessageStore::save_token_counts`].
pub async fn save_token_counts<B: Transactor>(
    b: &B,
    who: &dyn Reach,
    encoding: &str,
    counts: Vec<(MessageId, u32)>,
) -> Result<(), StoreError> {
    check_encoding(encoding)?;
    let tenant = who.tenant();
    if counts.is_empty() {
        return Ok(());
    }
    let dialect = b.dialect();
    let statements: Vec<Sql> = counts.chunks(PER_STATEMENT).map(|c| write_sql(dialect, tenant, encoding, c)).collect();
    b.write(
        who,
        Box::new(move |ex| {
            Box::pin(async move {
                for sql in statements {
                    ex.execute("save token counts", sql).await?;
                }
                Ok(())
            })
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn statements_bind_every_value_and_cast_values_lists_on_postgres() {
        let tenant = TenantId::parse("acme").unwrap();
        let (a, b) = (MessageId::new(), MessageId::new());
        let sql = write_sql(Dialect::Sqlite, &tenant, "o200k_base", &[(a, 3), (b, 4)]);
        assert_eq!(
            sql.text(),
            "INSERT INTO message_tokens (message_id, encoding, tokens) SELECT m.id, ?1, v.column2 FROM (VALUES \
             (?2, ?3), (?4, ?5)) AS v CROSS JOIN messages m CROSS JOIN threads t WHERE m.id = v.column1 \
             AND t.id = m.thread_id AND t.tenant = ?6 AND t.deleted_at IS NULL \
             ON CONFLICT (message_id, encoding) DO NOTHING"
        );
        let sql = write_sql(Dialect::Postgres, &tenant, "o200k_base", &[(a, 3)]);
        assert!(
            sql.text().starts_with("INSERT INTO message_tokens (tenant, message_id, encoding, tokens) SELECT t.tenant")
        );
        assert!(sql.text().contains("(VALUES (CAST($2 AS uuid), CAST($3 AS bigint))) AS v"), "{}", sql.text());
        let sql = read_sql(Dialect::Postgres, &tenant, "o200k_base", &[a, b]);
        assert!(sql.text().contains("c.message_id IN ($1, $2) AND c.encoding = $3"), "{}", sql.text());
    }
}
