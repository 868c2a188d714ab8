//! [`memlayer_ports::KeyStore`] on Postgres (migration 10, `api_keys`, under
//! the tenant row-level security policy): written once in
//! `memlayer_adapters_sql::keys`, over the statements [`crate::exec`] runs on
//! Postgres. The lookup by id, made before the tenant is known, reads through
//! the migration's `memlayer_find_api_key`, which admits that one row
//! whatever the transaction's tenant; listing and revoking stay under the
//! tenant's policy.

use crate::PgBackend;

memlayer_adapters_sql::key_store!(PgBackend);
