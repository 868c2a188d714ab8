//! The crate's one integration-test binary.
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

mod onnx;
mod summarize;
mod vector_index;
