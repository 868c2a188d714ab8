//! The adapter's one integration-test binary: the shared contract suites
//! against Postgres, plus Postgres-specific behaviour (row-level security,
//! migrations down and up, atomic bulk appends, pooled connections left
//! clean, statement timeout, statement cache, oversized full text, roles
//! that bypass RLS, TLS by `sslmode`).
//!
//! Every test gets a fresh database cloned from a migrated template. The
//! server is `MEMLAYER_TEST_DATABASE_URL`/`DATABASE_URL` or the one
//! `scripts/postgres start` runs; when none is reachable a test fails with
//! `CI` set and otherwise prints `SKIP <test>:` (`testing::skip`). The TLS test starts a second,
//! TLS-only server of its own (`scripts/postgres-tls`).
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

mod contract;
mod limits;
mod rls;
mod storage;
mod tls;
