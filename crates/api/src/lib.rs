//! memlayer's frontends: the HTTP server (axum) and the `memlayer` CLI.
//!
//! Invariants:
//! - this crate alone knows HTTP and JSON wire shapes: request and response
//!   types live in [`dto`] and convert to and from domain types;
//! - it owns the only mapping from errors to HTTP statuses ([`error`]);
//!   5xx bodies say nothing about internals, the error chain is logged once;
//! - every route is registered together with its OpenAPI description, so the
//!   document at `/api/openapi.json` cannot drift from the router; module `openapi`
//!   adds what derives cannot say (bounds of parameters, role-dependent
//!   message rules, the error responses every route can give), and
//!   schemathesis checks the result against the running server.
//!
//! Tests: this crate's one integration-test binary, `it`, lives at the
//! workspace root in `tests/it/` (declared by `[[test]]` in this crate's
//! `Cargo.toml`): the API in process on libSQL and Postgres, the real binary
//! end to end, fuzzing, crash and load runs, and the architecture's tidy
//! checks (`tests/it/tidy.rs`). Run it with `cargo test -p memlayer-api
//! --test it`.

pub mod auth;
mod catalog_routes;
pub mod cli;
pub mod cli_catalog;
pub mod cli_context;
pub mod cli_keys;
pub mod cli_retention;
pub mod cli_summary;
pub mod cli_transfer;
pub mod cli_workflows;
pub mod cli_working;
pub mod context_routes;
pub mod dashboard_routes;
pub mod dto;
pub mod error;
mod extract;
pub mod idempotency;
mod key_routes;
pub mod limits;
mod observability_routes;
mod openapi;
mod otlp;
mod progress;
mod retention_routes;
mod router;
mod routes;
pub mod server;
mod state;
mod summary_routes;
pub mod transfer_routes;
mod workflow_routes;
mod working_routes;

pub use router::{ApiDoc, router};
pub use state::AppState;
