//! Fixtures the contract cases share: tenants, messages, page sizes, a
//! fresh thread, the error assertions and a proptest runner for async cases.

use memlayer_domain::{NewMessage, NewThread, PageSize, Role, TenantId, ThreadId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::Backend;
use crate::StoreError;

pub(super) fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub(super) fn msg(i: usize) -> NewMessage {
    NewMessage::text(Role::User, format!("message {i}")).unwrap()
}

pub(super) fn msgs(range: std::ops::Range<usize>) -> Vec<NewMessage> {
    range.map(msg).collect()
}

pub(super) fn size(n: u32) -> PageSize {
    PageSize::new(n).unwrap()
}

pub(super) async fn thread(b: &Backend, t: &TenantId) -> ThreadId {
    b.threads.create(t, NewThread::default()).await.unwrap().id
}

pub(super) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, ctx: &str) {
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{ctx}: expected NotFound, got {r:?}");
}

pub(super) fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, ctx: &str) {
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{ctx}: expected Invalid, got {r:?}");
}

/// Runs a small proptest inside the async test, blocking in place.
pub(super) fn run_prop<S: Strategy>(cases: u32, strategy: S, body: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    tokio::task::block_in_place(|| runner.run(&strategy, body)).unwrap();
}
