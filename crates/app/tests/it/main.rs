//! Tests of the application layer: use-case rules with mocked ports (failure
//! injection), configuration layering, and wiring over the real adapters.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]
#![allow(clippy::result_large_err, reason = "figment::Jail closures return figment::Error")]

mod catalog;
mod config;
mod context;
mod memory;
mod observability;
mod postgres;
mod runners;
mod semantic;
mod summary;
mod wiring;
mod workflows;
mod working;
