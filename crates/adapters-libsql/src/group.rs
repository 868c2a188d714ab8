//! Group commit: the writes that queue for the one writer connection while
//! another holds it share one transaction, and so one `fsync`.
//!
//! Every write joins a queue, then waits for the writer. Whoever gets the
//! writer takes the whole queue (its own write, or none when an earlier
//! holder already took it) and runs it as one `IMMEDIATE` transaction, each
//! write inside its own savepoint: a write that fails is rolled back to its
//! savepoint and answered with its own error at once, without touching the
//! others; the rest are answered after the one `COMMIT`, with its outcome.
//! A write is acknowledged only once the transaction holding it is durable,
//! exactly as when each write had its own transaction.
//!
//! Invariants:
//! - a write runs at most once, and its caller hears `Ok` only after the
//!   commit that holds it succeeded;
//! - a write whose caller stopped waiting before it ran is skipped;
//! - when the database rolls the whole transaction back by itself (an I/O
//!   error, a full disk), every write of the group hears an error: none of
//!   it is stored.

use std::future::Future;
use std::pin::Pin;

use libsql::Connection;
use memlayer_ports::StoreError;
use tokio::sync::oneshot;

use crate::error::{Context as _, DriverError};
use crate::statements::Statements;

/// A write waiting in the queue.
pub(crate) type Queued = Box<dyn Pending>;

type Running = Pin<Box<dyn Future<Output = Option<Box<dyn Ran>>> + Send>>;

/// A caller's write that has not run yet.
pub(crate) trait Pending: Send {
    /// Runs the write on the group's connection; `None` when its caller has
    /// stopped waiting (nothing ran).
    fn run(self: Box<Self>, conn: Connection) -> Running;
    /// Answers the caller with `e` without running the write.
    fn fail(self: Box<Self>, e: StoreError);
}

/// A write that ran, waiting to hear how its transaction ended.
pub(crate) trait Ran: Send {
    fn succeeded(&self) -> bool;
    /// Answers the caller: its own error when the write failed, else
    /// its value when `committed` is `Ok`, else the commit's error.
    fn settle(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A write closure and the channel its answer goes back through.
pub(crate) struct Job<F, T> {
    f: F,
    answer: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job<F, T> {
    /// The job and the receiver its caller waits on.
    pub(crate) fn new(f: F) -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (answer, rx) = oneshot::channel();
        (Self { f, answer }, rx)
    }
}

impl<T, F, Fut> Pending for Job<F, T>
where
    T: Send + 'static,
    F: FnOnce(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    fn run(self: Box<Self>, conn: Connection) -> Running {
        let Job { f, answer } = *self;
        Box::pin(async move {
            if answer.is_closed() {
                return None;
            }
            let result = f(conn).await;
            Some(Box::new(Outcome { result, answer }) as Box<dyn Ran>)
        })
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.answer.send(Err(e));
    }
}

struct Outcome<T> {
    result: Result<T, StoreError>,
    answer: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Ran for Outcome<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn settle(self: Box<Self>, committed: Result<(), StoreError>) {
        let Outcome { result, answer } = *self;
        // The caller may have stopped waiting; the outcome stands either way.
        let _ = answer.send(result.and_then(|value| committed.map(|()| value)));
    }
}

/// Savepoint of one write of a group; no write of this crate uses savepoints
/// itself.
const MEMBER: &str = "memlayer_group_member";
const SAVEPOINT: &str = "SAVEPOINT memlayer_group_member";
const RELEASE: &str = "RELEASE memlayer_group_member";

/// Runs `group` (in queue order) as one `IMMEDIATE` transaction on `conn`
/// and answers every caller. A group of one runs without a savepoint, as a
/// plain transaction.
pub(crate) async fn run(conn: &Connection, statements: &Statements, group: Vec<Queued>) {
    if !conn.is_autocommit() {
        // A previous operation died inside its transaction (a panic):
        // never let its half-done work join ours.
        tracing::warn!("writer connection was left inside a transaction; rolling it back");
        if let Err(e) = conn.execute_batch("ROLLBACK").await.ctx("roll back abandoned transaction") {
            return fail_all(group, Vec::new(), &e);
        }
    }
    if let Err(e) = statements.execute(conn, "begin write transaction", "BEGIN IMMEDIATE", Vec::new()).await {
        return fail_all(group, Vec::new(), &e);
    }
    let alone = group.len() == 1;
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(group.len());
    let mut queue = group.into_iter();
    while let Some(write) = queue.next() {
        if !alone && let Err(e) = statements.execute(conn, "open savepoint", SAVEPOINT, Vec::new()).await {
            write.fail(e);
            continue;
        }
        let Some(outcome) = write.run(Connection::clone(conn)).await else {
            if !alone {
                let _ = statements.execute(conn, "close savepoint", RELEASE, Vec::new()).await;
            }
            continue;
        };
        if conn.is_autocommit() {
            // The database ended the transaction itself: nothing of the
            // group is stored.
            let e = StoreError::Unavailable("the database rolled the write transaction back; retry".to_owned());
            outcome.settle(Err(copy(&e)));
            return fail_all(queue.collect(), ran, &e);
        }
        let closed = match (outcome.succeeded(), alone) {
            (true, true) => Ok(()),
            (true, false) => statements.execute(conn, "close savepoint", RELEASE, Vec::new()).await.map(drop),
            (false, true) => conn.execute_batch("ROLLBACK").await.map(drop).ctx("close savepoint"),
            (false, false) => {
                conn.execute_batch(&format!("ROLLBACK TO {MEMBER}; {RELEASE}")).await.map(drop).ctx("close savepoint")
            }
        };
        if let Err(e) = closed {
            outcome.settle(Err(copy(&e)));
            let _ = conn.execute_batch("ROLLBACK").await;
            return fail_all(queue.collect(), ran, &e);
        }
        if outcome.succeeded() {
            ran.push(outcome);
        } else {
            // Its own error, now: the failed write is already undone.
            outcome.settle(Ok(()));
        }
    }
    if conn.is_autocommit() {
        // A lone write failed and was rolled back: nothing to commit.
        return;
    }
    match statements.execute(conn, "commit", "COMMIT", Vec::new()).await {
        Ok(_) => {
            for outcome in ran {
                outcome.settle(Ok(()));
            }
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK").await;
            }
            fail_all(Vec::new(), ran, &e);
        }
    }
}

/// Answers every write of a group that will not be stored.
fn fail_all(pending: Vec<Queued>, ran: Vec<Box<dyn Ran>>, e: &StoreError) {
    for outcome in ran {
        outcome.settle(Err(copy(e)));
    }
    for write in pending {
        write.fail(copy(e));
    }
}

/// The same error for another caller of the group (`StoreError` is not
/// `Clone`: its backend variant holds a boxed source).
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Forbidden(m) => StoreError::Forbidden(m.clone()),
        StoreError::RateLimited { limit, retry_after, message } => {
            StoreError::RateLimited { limit, retry_after: *retry_after, message: message.clone() }
        }
        StoreError::NotFound { what, id } => StoreError::NotFound { what, id: id.clone() },
        StoreError::Unprovisioned(m) => StoreError::Unprovisioned(m.clone()),
        other => StoreError::backend(DriverError::new("write transaction", other.to_string())),
    }
}
