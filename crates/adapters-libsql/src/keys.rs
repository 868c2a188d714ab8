//! [`memlayer_ports::KeyStore`] on libSQL (migration 10, `api_keys`):
//! written once in `memlayer_adapters_sql::keys`, over the statements
//! [`crate::exec`] runs on libSQL. A lookup by id is a read on a reader
//! connection; creating, revoking and recording last uses are writes on the
//! one writer.

use crate::LibsqlBackend;

memlayer_adapters_sql::key_store!(LibsqlBackend);
