//! Deferred commits (`LibsqlConfig::commit_delay`): appends acknowledged
//! once written to an append journal, committed to the database together.
//!
//! With `synchronous = NORMAL` a commit is not synced either: what makes an
//! acknowledged write survive a crash of the process is that its WAL frames
//! were handed to the operating system before the answer. A commit hands
//! over every page the write touched (the message row, its indexes, the
//! thread row, the usage counters), a few pages per message; one append's
//! journal record is its rows, a few hundred bytes. So with a delay the
//! writer keeps its transaction open across appends and acknowledges each
//! once its record is written to the journal (`write`, no `fsync`: the
//! promise of NORMAL), and commits them together at most `commit_delay`
//! later, before any read (so a read sees every acknowledged write), and
//! with any other write (which is committed before it is answered, as
//! always).
//!
//! Invariants:
//! - an append is acknowledged only once it ran in the writer's open
//!   transaction and its record is in the journal file; a failed append
//!   writes no record;
//! - the journal holds exactly the records of acknowledged appends since
//!   the last commit that succeeded: it is emptied right after each commit,
//!   under the writer;
//! - a read never starts while acknowledged appends wait uncommitted;
//! - when the open transaction is lost (the process dies, or the database
//!   rolls it back by itself), its appends are applied again from the
//!   journal, in order, before any other write: at open, or at the next
//!   write. An append whose first message is stored already (committed
//!   before the journal was emptied) is skipped;
//! - a write that died part-way (a panic) is never committed: the next
//!   group rolls the open transaction back, and its appends are applied
//!   again from the journal.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libsql::Value;
use memlayer_ports::StoreError;
use tokio::sync::Notify;

use crate::error::DriverError;

/// Longest record journaled; a larger append (a batch of big messages) is
/// committed on its own before it is acknowledged, as without a delay.
pub(crate) const MAX_RECORD_BYTES: usize = 8 << 20;

/// The deferral state of a backend with a commit delay.
pub(crate) struct Deferral {
    pub(crate) delay: Duration,
    /// Acknowledged appends wait in the writer's open transaction. Changed
    /// only while holding the writer. Records in the journal while it is
    /// not set are lost from the database: applied again before the next
    /// write ([`Deferral::is_lost`]).
    open: AtomicBool,
    /// A group is running on the writer; still set when the next one
    /// starts, the last one panicked part-way, and its half-done work must
    /// not be committed ([`Deferral::start`]).
    running: AtomicBool,
    /// Wakes the task that commits `delay` after the first deferred append
    /// (its own handle: the task must not keep the journal open).
    pub(crate) wake: Arc<Notify>,
    journal: Mutex<Journal>,
}

struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes written since it was last emptied.
    len: u64,
}

impl Deferral {
    /// Opens (creating) the journal beside the database file `db`.
    pub(crate) fn open(db: &Path, delay: Duration) -> Result<Self, StoreError> {
        let path = journal_path(db);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("create the directory of", &path, &e))?;
        }
        let file =
            OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(|e| io("open", &path, &e))?;
        // One process per journal: another one's records are its own to
        // commit or apply again, and emptying them would lose them.
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::Unavailable(format!(
                "{} is held by another process: deferred commits (commit_delay) allow one process per database file",
                path.display()
            )),
            std::fs::TryLockError::Error(e) => io("lock", &path, &e),
        })?;
        let len = file.metadata().map_err(|e| io("read", &path, &e))?.len();
        Ok(Self {
            delay,
            // Records left by a process that died are lost: applied at open.
            open: AtomicBool::new(false),
            running: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            journal: Mutex::new(Journal { path, file, len }),
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    pub(crate) fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }

    /// The journal holds records no open transaction holds (its
    /// transaction was lost, or a process died, or the journal could not be
    /// emptied after a commit): they are applied again before the next
    /// write, skipping those stored already.
    pub(crate) fn is_lost(&self) -> bool {
        !self.is_open() && self.journal().len > 0
    }

    /// The open transaction ended without its commit: what it acknowledged
    /// is applied again from the journal before the next write.
    pub(crate) fn lose(&self) {
        self.set_open(false);
    }

    /// Marks a group running until the guard drops (not while unwinding
    /// from a panic); `true` when the last group never finished.
    pub(crate) fn start(&self) -> (Running<'_>, bool) {
        let died = self.running.swap(true, Ordering::SeqCst);
        (Running(self), died)
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `records` (each framed with its length and checksum) in one
    /// `write`; not synced.
    pub(crate) fn append(&self, records: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len() + 8).sum());
        for r in records {
            let len = u32::try_from(r.len()).map_err(|_| StoreError::backend("journal record too long"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
        }
        let mut j = self.journal();
        let Journal { path, file, len } = &mut *j;
        if let Err(e) = file.write_all(&buf) {
            // A partial record at the end is ignored when read back (its
            // checksum fails); cut it off so later records stay readable.
            let _ = file.set_len(*len);
            return Err(io("write", path, &e));
        }
        *len += buf.len() as u64;
        Ok(())
    }

    /// Empties the journal: everything in it is committed.
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        let mut j = self.journal();
        if j.len == 0 {
            return Ok(());
        }
        j.file.set_len(0).map_err(|e| io("empty", &j.path, &e))?;
        j.len = 0;
        Ok(())
    }

    /// Deletes the (empty) journal file.
    pub(crate) fn remove(self) -> Result<(), StoreError> {
        let j = self.journal.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::fs::remove_file(&j.path).map_err(|e| io("remove", &j.path, &e))
    }

    /// The records in the journal, oldest first, up to the first that is
    /// torn or fails its checksum (an append interrupted mid-write was never
    /// acknowledged); what follows it is cut off, so records appended later
    /// stay readable.
    pub(crate) fn records(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut j = self.journal();
        let Journal { path, file, len } = &mut *j;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| io("read", path, &e))?;
        let (records, valid) = frames(&bytes);
        if valid < bytes.len() {
            file.set_len(valid as u64).map_err(|e| io("cut the torn end of", path, &e))?;
        }
        *len = valid as u64;
        Ok(records)
    }
}

/// The journal a process left beside `db` with appends in it, when no
/// process holds it now: applied again at open, even without a commit
/// delay (`None`: none, or empty, or held).
pub(crate) fn leftover(db: &Path) -> Result<Option<Deferral>, StoreError> {
    let path = journal_path(db);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > 0 => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path, &e)),
    }
    match Deferral::open(db, Duration::ZERO) {
        Ok(d) => Ok(Some(d)),
        Err(StoreError::Unavailable(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A group running on the writer ([`Deferral::start`]).
pub(crate) struct Running<'a>(&'a Deferral);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.0.running.store(false, Ordering::SeqCst);
        }
    }
}

/// The journal's path beside the database file.
#[must_use]
pub(crate) fn journal_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push("-appends");
    db.with_file_name(name)
}

/// The whole records at the start of `bytes`, and their length in bytes.
fn frames(mut bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut valid = 0;
    while bytes.len() >= 8 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let sum = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let Some(body) = bytes.get(8..8 + len) else { break };
        if crc32fast::hash(body) != sum {
            break;
        }
        out.push(body.to_vec());
        bytes = &bytes[8 + len..];
        valid += 8 + len;
    }
    (out, valid)
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::backend(DriverError::new("append journal", format!("{what} {}: {e}", path.display())))
}

/// Values as journal bytes: a tag, then the value (integers and floats
/// little-endian, text and blobs with a 4-byte length).
pub(crate) fn encode(values: &[Value], out: &mut Vec<u8>) {
    for v in values {
        match v {
            Value::Null => out.push(0),
            Value::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Real(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Text(s) => {
                out.push(3);
                bytes(s.as_bytes(), out);
            }
            Value::Blob(b) => {
                out.push(4);
                bytes(b, out);
            }
        }
    }
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    // Records are at most MAX_RECORD_BYTES, far below u32::MAX.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// The values [`encode`] wrote.
pub(crate) fn decode(mut b: &[u8]) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        out.push(match tag {
            0 => Value::Null,
            1 => Value::Integer(i64::from_le_bytes(fixed(&mut b)?)),
            2 => Value::Real(f64::from_le_bytes(fixed(&mut b)?)),
            3 | 4 => {
                let len = u32::from_le_bytes(fixed(&mut b)?) as usize;
                let (body, rest) = b.split_at_checked(len).ok_or_else(undecodable)?;
                b = rest;
                if tag == 3 {
                    Value::Text(String::from_utf8(body.to_vec()).map_err(|_| undecodable())?)
                } else {
                    Value::Blob(body.to_vec())
                }
            }
            _ => return Err(undecodable()),
        });
    }
    Ok(out)
}

/// The next `N` bytes of `b`.
fn fixed<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], StoreError> {
    let (head, rest) = b.split_first_chunk::<N>().ok_or_else(undecodable)?;
    *b = rest;
    Ok(*head)
}

fn undecodable() -> StoreError {
    StoreError::backend(DriverError::new("append journal", "a record does not decode"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn values_round_trip() {
        let values = vec![
            Value::Null,
            Value::Integer(-7),
            Value::Integer(i64::MAX),
            Value::Real(1.5),
            Value::Text("héllo".into()),
            Value::Text(String::new()),
            Value::Blob(vec![0, 1, 255]),
        ];
        let mut b = Vec::new();
        encode(&values, &mut b);
        assert_eq!(decode(&b).unwrap(), values);
        assert!(decode(&b[..b.len() - 1]).is_err(), "a cut record does not decode");
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let d = Deferral::open(&dir.path().join("db"), Duration::from_millis(5)).unwrap();
        d.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        d.append(&[b"three".to_vec()]).unwrap();
        assert_eq!(d.records().unwrap(), vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);

        let path = journal_path(&dir.path().join("db"));
        let original = std::fs::read(&path).unwrap();
        std::fs::write(&path, &original[..original.len() - 2]).unwrap();
        assert_eq!(d.records().unwrap().len(), 2, "a torn last record is left out");
        d.append(&[b"four".to_vec()]).unwrap();
        let after = d.records().unwrap();
        assert_eq!(after, vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()], "the torn end was cut off");
        let mut bytes = original.clone();
        let second = 8 + 3 + 8; // the second record's body starts here
        bytes[second] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(d.records().unwrap(), vec![b"one".to_vec()], "a checksum failure ends the records");

        d.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(Deferral::open(&dir.path().join("db"), Duration::from_millis(5)).is_err(), "held");
        drop(d);
        let reopened = Deferral::open(&dir.path().join("db"), Duration::from_millis(5)).unwrap();
        assert!(!reopened.is_lost(), "an empty journal has nothing to apply");
    }
}
