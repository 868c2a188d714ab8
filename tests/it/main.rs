//! Cross-crate tests of memlayer's frontends: the HTTP API in process over
//! the real app and libSQL adapter (`http`, `catalog`, `search`,
//! `idempotency`, `context`: context assembly and its bad inputs; JWT authentication in `jwt`; `auth`, the authorization
//! matrix over every route of the document with API keys, also on Postgres,
//! and the README's tour with a key; admission control over real sockets in `admission`, caps and
//! response budgets in `limits`; the bad-input
//! and tenant-isolation cases also on a fresh Postgres database), and the real
//! `memlayer` binary driven over HTTP and its CLI (`e2e`; `frontends` holds
//! both to the same use-case rule), fuzzed from its
//! OpenAPI document by schemathesis (`fuzz`), killed with `kill -9`
//! during concurrent appends (`crash`), and put under mixed concurrent load
//! past saturation (`load`). `quota` holds the storage quotas (403 and 413
//! `quota_exceeded`, per-tenant overrides, `/api/usage`). `reach` holds a caller bound to a resource to
//! that resource on every route (a property test); `rate` holds the rate
//! limits, and `shared` two servers sharing them and catalog invalidations
//! through one Redis. `working` holds working memory over HTTP (both
//! backends) and the CLI; `summary` thread summaries (on demand, versions,
//! a summariser that is down, the CLI); `retention` retention policies,
//! prunes, erasure of a resource (both backends), the shared lease and the CLI. `dashboard` holds the observability dashboard's files (types, validators,
//! policy) and drives every view in headless Chromium. `tidy` checks the architecture's invariants
//! (dependency direction, module docs, the code map) on the workspace itself.
//!
//! This is the `memlayer-api` package's one integration-test binary.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

mod admission;
mod auth;
mod catalog;
mod context;
mod crash;
mod dashboard;
mod e2e;
mod fork;
mod frontends;
mod fuzz;
mod http;
mod idempotency;
mod jwt;
mod limits;
mod load;
mod nul;
mod observability;
mod otlp_python;
mod quota;
mod rate;
mod reach;
mod retention;
mod search;
mod shared;
mod summary;
mod support;
mod sweep;
mod tidy;
mod transfer;
mod workflows;
mod working;
