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
//! With a commit delay ([`crate::journal`]), a group made only of journaled
//! appends is not committed: it stays in the writer's open transaction, and
//! its writes are answered once their records are in the journal. Any
//! other group commits the open transaction with its own writes.
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
use std::sync::Arc;

use libsql::Connection;
use memlayer_ports::StoreError;
use tokio::sync::oneshot;

use crate::error::{Context as _, DriverError};
use crate::journal::Deferral;
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
    /// Whether it carries a journal record (it may be answered before the
    /// commit when commits are deferred).
    fn journaled(&self) -> bool;
}

/// A write that ran, waiting to hear how its transaction ended.
pub(crate) trait Ran: Send {
    fn succeeded(&self) -> bool;
    /// Answers the caller: its own error when the write failed, else
    /// its value when `committed` is `Ok`, else the commit's error.
    fn settle(self: Box<Self>, committed: Result<(), StoreError>);
    /// Its journal record, if it has one (taken once).
    fn take_record(&mut self) -> Option<Vec<u8>>;
}

/// A write closure and the channel its answer goes back through.
pub(crate) struct Job<F, T> {
    f: F,
    answer: oneshot::Sender<Result<T, StoreError>>,
    record: Option<Vec<u8>>,
}

impl<F, T> Job<F, T> {
    /// The job (with its journal record, if any) and the receiver its
    /// caller waits on.
    pub(crate) fn new(f: F, record: Option<Vec<u8>>) -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (answer, rx) = oneshot::channel();
        (Self { f, answer, record }, rx)
    }
}

impl<T, F, Fut> Pending for Job<F, T>
where
    T: Send + 'static,
    F: FnOnce(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    fn run(self: Box<Self>, conn: Connection) -> Running {
        let Job { f, answer, record } = *self;
        Box::pin(async move {
            if answer.is_closed() {
                return None;
            }
            let result = f(conn).await;
            Some(Box::new(Outcome { result, answer, record }) as Box<dyn Ran>)
        })
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.answer.send(Err(e));
    }

    fn journaled(&self) -> bool {
        self.record.is_some()
    }
}

struct Outcome<T> {
    result: Result<T, StoreError>,
    answer: oneshot::Sender<Result<T, StoreError>>,
    record: Option<Vec<u8>>,
}

impl<T: Send> Ran for Outcome<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn settle(self: Box<Self>, committed: Result<(), StoreError>) {
        let Outcome { result, answer, .. } = *self;
        // The caller may have stopped waiting; the outcome stands either way.
        let _ = answer.send(result.and_then(|value| committed.map(|()| value)));
    }

    fn take_record(&mut self) -> Option<Vec<u8>> {
        self.record.take()
    }
}

/// Savepoint of one write of a group; no write of this crate uses savepoints
/// itself.
const MEMBER: &str = "memlayer_group_member";
const SAVEPOINT: &str = "SAVEPOINT memlayer_group_member";
const RELEASE: &str = "RELEASE memlayer_group_member";

/// Runs `group` (in queue order) as one `IMMEDIATE` transaction on `conn`
/// and answers every caller. A group of one runs without a savepoint, as a
/// plain transaction, unless commits are deferred.
///
/// With `deferral`: the group joins the open transaction if there is one
/// (applying the journal first when the last one was lost); a group of
/// journaled appends only leaves it open, answered once their records are
/// written; any other group commits it, and then empties the journal.
pub(crate) async fn run(
    conn: &Connection,
    statements: &Arc<Statements>,
    group: Vec<Queued>,
    deferral: Option<&Deferral>,
) {
    let running = deferral.map(Deferral::start);
    if let (Some(d), Some((_, true))) = (deferral, &running) {
        // The last group died part-way (a panic): the open transaction may
        // hold half-done work. Lost: rolled back below, and the journal's
        // appends applied again.
        d.lose();
    }
    let open = deferral.is_some_and(Deferral::is_open);
    if !open && !conn.is_autocommit() {
        // A previous operation died inside its transaction (a panic):
        // never let its half-done work join ours.
        tracing::warn!("writer connection was left inside a transaction; rolling it back");
        if let Err(e) = conn.execute_batch("ROLLBACK").await.ctx("roll back abandoned transaction") {
            return fail_all(group, Vec::new(), &e);
        }
    }
    if !open {
        if let Err(e) = statements.execute(conn, "begin write transaction", "BEGIN IMMEDIATE", Vec::new()).await {
            return fail_all(group, Vec::new(), &e);
        }
        if let Some(d) = deferral
            && d.is_lost()
            && let Err(e) = reapply(conn, statements, d).await
        {
            let _ = conn.execute_batch("ROLLBACK").await;
            return fail_all(group, Vec::new(), &e);
        }
    }
    let keep_open = deferral.is_some() && !group.is_empty() && group.iter().all(|w| w.journaled());
    let alone = group.len() == 1 && deferral.is_none();
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
            // group is stored (nor what the open transaction held).
            let e = StoreError::Unavailable("the database rolled the write transaction back; retry".to_owned());
            outcome.settle(Err(copy(&e)));
            deferral.inspect(|d| d.lose());
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
            deferral.inspect(|d| d.lose());
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
    if keep_open && let Some(d) = deferral {
        let records: Vec<Vec<u8>> = ran.iter_mut().filter_map(|outcome| outcome.take_record()).collect();
        // With nothing acknowledged waiting, nothing is deferred: the
        // (empty) transaction commits below.
        if d.is_open() || !records.is_empty() {
            match d.append(&records) {
                Ok(()) => {
                    if !d.is_open() {
                        d.set_open(true);
                        d.wake.notify_one();
                    }
                    for outcome in ran {
                        outcome.settle(Ok(()));
                    }
                    return;
                }
                // Not journaled: committed now instead, as without a delay.
                Err(e) => tracing::warn!(error = %e, "writing the append journal failed; committing at once"),
            }
        }
    }
    let committed = commit(conn, statements, deferral).await;
    match committed {
        Ok(()) => {
            for outcome in ran {
                outcome.settle(Ok(()));
            }
        }
        Err(e) => fail_all(Vec::new(), ran, &e),
    }
}

/// Commits the appends `d` holds uncommitted, applying its journal again
/// first when their transaction was lost, on the writer `conn` (held by the
/// caller until this returns).
///
/// # Errors
/// `Unavailable` when they are not committed (they stay in the journal).
pub(crate) async fn commit_deferred(
    conn: &Connection,
    statements: &Arc<Statements>,
    d: &Deferral,
) -> Result<(), StoreError> {
    if !d.is_open() && !d.is_lost() {
        return Ok(());
    }
    // An empty group: joins the open transaction (or begins one and applies
    // the journal again), and commits.
    run(conn, statements, Vec::new(), Some(d)).await;
    if d.is_open() || d.is_lost() {
        return Err(StoreError::Unavailable(
            "appends acknowledged under a commit delay could not be committed; retry".to_owned(),
        ));
    }
    Ok(())
}

/// Commits the open transaction on `conn` and, with `deferral`, empties
/// the journal; on failure rolls it back (what it acknowledged is applied
/// again from the journal before the next write).
pub(crate) async fn commit(
    conn: &Connection,
    statements: &Statements,
    deferral: Option<&Deferral>,
) -> Result<(), StoreError> {
    match statements.execute(conn, "commit", "COMMIT", Vec::new()).await {
        Ok(_) => {
            if let Some(d) = deferral {
                d.set_open(false);
                if let Err(e) = d.clear() {
                    // Its records are applied again at the next write; those
                    // stored already (all of them) are skipped.
                    tracing::warn!(error = %e, "emptying the append journal failed");
                }
            }
            Ok(())
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK").await;
            }
            deferral.inspect(|d| d.lose());
            Err(e)
        }
    }
}

/// Applies the journal's appends again inside the transaction just begun
/// (the one that held them was lost).
async fn reapply(conn: &Connection, statements: &Arc<Statements>, d: &Deferral) -> Result<(), StoreError> {
    let records = d.records()?;
    crate::messages::replay(conn, statements, &records).await?;
    if !records.is_empty() {
        // They wait in this transaction now, acknowledged: the journal
        // keeps them until it commits.
        d.set_open(true);
        d.wake.notify_one();
    }
    Ok(())
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
