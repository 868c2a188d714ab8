//! The adapter's one integration-test binary: the shared contract suite plus
//! libSQL-specific behaviour (migrations, files, `:memory:`, atomicity, two
//! processes on one file, full-text search, embedding jobs, the native vector
//! index).
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

mod atomicity;
mod common;
mod contract;
mod deferred;
mod migrations;
mod native_index;
mod semantic;
mod shared_file;
mod storage;
