//! Pages and keyset cursors: page sizes, directions, and the opaque
//! [`Cursor`] of message pages and thread listings, bound to its thread (or
//! to the tenant and filter of a listing) and sealed by [`crate::seal`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::seal::{fnv1a, seal, unseal};
use crate::{DomainError, TenantId, ThreadFilter, ThreadId};

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// A validated page size: 1 to [`MAX_PAGE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageSize(u32);

impl PageSize {
    /// Validates a page size.
    ///
    /// # Errors
    /// [`DomainError`] on `limit` when 0 or above [`MAX_PAGE_SIZE`].
    pub fn new(n: u32) -> Result<Self, DomainError> {
        if n == 0 || n > MAX_PAGE_SIZE {
            return Err(DomainError::new("limit", format!("must be between 1 and {MAX_PAGE_SIZE}, got {n}")));
        }
        Ok(Self(n))
    }

    /// The size.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(50)
    }
}

/// Which way a page runs through a thread's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Oldest first, by increasing sequence number.
    #[default]
    Forward,
    /// Newest first, by decreasing sequence number.
    Backward,
}

impl FromStr for Direction {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forward" => Ok(Self::Forward),
            "backward" => Ok(Self::Backward),
            _ => Err(DomainError::new("direction", "must be `forward` or `backward`")),
        }
    }
}

/// A page of items and the cursor for the next one (`None` at the end).
/// Catalog listings use [`crate::ListCursor`] as `C`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C = Cursor> {
    /// Items in traversal order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this page reached the end.
    pub next_cursor: Option<C>,
}

/// What a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// A thread's messages.
    Messages,
    /// A tenant's thread listing.
    Threads,
    /// A thread's kept summary versions, newest first.
    SummaryVersions,
}

/// An opaque keyset cursor.
///
/// It records what it pages (a thread's messages, or a listing of threads with
/// one filter), the direction, and the last key seen. Its text form is
/// URL-safe base64 with a checksum: an edited or truncated cursor is rejected,
/// and a cursor is refused for any thread, tenant or filter other than the one
/// that issued it. The checksum detects edits; it is not a secret, and access
/// control never depends on it (every read is still scoped by tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    kind: CursorKind,
    direction: Direction,
    /// What it pages: the thread (its id) for messages, or the listing of
    /// threads (fingerprint of tenant and filter).
    listing: [u8; 16],
    seq: i64,
    last_id: [u8; 16],
}

const VERSION: u8 = 1;
const LEN: usize = 1 + 1 + 1 + 16 + 8 + 16 + 8;

impl Cursor {
    /// A cursor that continues a message page after (forward) or before
    /// (backward) sequence number `seq`.
    #[must_use]
    pub fn messages(thread: ThreadId, direction: Direction, seq: i64) -> Self {
        Self { kind: CursorKind::Messages, direction, listing: *thread.as_uuid().as_bytes(), seq, last_id: [0; 16] }
    }

    /// A cursor that continues a thread listing after `last`.
    #[must_use]
    pub fn threads(tenant: &TenantId, filter: &ThreadFilter, last: ThreadId) -> Self {
        Self {
            kind: CursorKind::Threads,
            direction: Direction::Backward,
            listing: threads_listing(tenant, filter),
            seq: 0,
            last_id: *last.as_uuid().as_bytes(),
        }
    }

    /// What this cursor pages.
    #[must_use]
    pub fn kind(&self) -> CursorKind {
        self.kind
    }

    /// Direction of the page this cursor continues.
    #[must_use]
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// For a message page of `thread`: the direction and the sequence number to
    /// continue from (exclusive).
    ///
    /// # Errors
    /// [`DomainError`] on `cursor` when the cursor belongs elsewhere.
    pub fn for_messages(&self, thread: ThreadId) -> Result<(Direction, i64), DomainError> {
        if self.kind != CursorKind::Messages || self.listing != *thread.as_uuid().as_bytes() {
            return Err(DomainError::new("cursor", "belongs to another thread or listing"));
        }
        Ok((self.direction, self.seq))
    }

    /// A cursor that continues a listing of `thread`'s summary versions
    /// (newest first) below `version`.
    #[must_use]
    pub fn summary_versions(thread: ThreadId, version: u64) -> Self {
        Self {
            kind: CursorKind::SummaryVersions,
            direction: Direction::Backward,
            listing: *thread.as_uuid().as_bytes(),
            seq: i64::try_from(version).unwrap_or(i64::MAX),
            last_id: [0; 16],
        }
    }

    /// For `thread`'s summary versions: the last version seen (exclusive).
    ///
    /// # Errors
    /// [`DomainError`] on `cursor` when the cursor belongs elsewhere.
    pub fn for_summary_versions(&self, thread: ThreadId) -> Result<u64, DomainError> {
        if self.kind != CursorKind::SummaryVersions || self.listing != *thread.as_uuid().as_bytes() {
            return Err(DomainError::new("cursor", "belongs to another thread or listing"));
        }
        Ok(u64::try_from(self.seq).unwrap_or_default())
    }

    /// For a thread listing: the last thread id seen (exclusive).
    ///
    /// # Errors
    /// [`DomainError`] on `cursor` when the cursor was issued for another tenant,
    /// filter or kind of listing.
    pub fn for_threads(&self, tenant: &TenantId, filter: &ThreadFilter) -> Result<ThreadId, DomainError> {
        if self.kind != CursorKind::Threads || self.listing != threads_listing(tenant, filter) {
            return Err(DomainError::new("cursor", "was issued for another listing or filter"));
        }
        Ok(ThreadId::from_uuid(uuid::Uuid::from_bytes(self.last_id)))
    }

    /// The text form.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(LEN);
        b.push(VERSION);
        b.push(match self.kind {
            CursorKind::Messages => 1,
            CursorKind::Threads => 2,
            CursorKind::SummaryVersions => 3,
        });
        b.push(match self.direction {
            Direction::Forward => 1,
            Direction::Backward => 2,
        });
        b.extend_from_slice(&self.listing);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.last_id);
        seal(b)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`DomainError`] on `cursor` for anything that [`Cursor::encode`] did not produce.
    pub fn decode(s: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::new("cursor", "is malformed or was modified");
        let b = unseal(s).ok_or_else(bad)?;
        if b.len() != LEN - 8 || b[0] != VERSION {
            return Err(bad());
        }
        let kind = match b[1] {
            1 => CursorKind::Messages,
            2 => CursorKind::Threads,
            3 => CursorKind::SummaryVersions,
            _ => return Err(bad()),
        };
        let direction = match b[2] {
            1 => Direction::Forward,
            2 => Direction::Backward,
            _ => return Err(bad()),
        };
        let listing: [u8; 16] = b[3..19].try_into().map_err(|_| bad())?;
        let seq = i64::from_be_bytes(b[19..27].try_into().map_err(|_| bad())?);
        let last_id: [u8; 16] = b[27..43].try_into().map_err(|_| bad())?;
        if seq < 0 {
            return Err(bad());
        }
        Ok(Self { kind, direction, listing, seq, last_id })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Cursor {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

fn threads_listing(tenant: &TenantId, filter: &ThreadFilter) -> [u8; 16] {
    let mut listing = [0u8; 16];
    listing[..8].copy_from_slice(&fnv1a(tenant.as_str().as_bytes()).to_be_bytes());
    listing[8..].copy_from_slice(&filter.fingerprint().to_be_bytes());
    listing
}

/// Resolves an optional cursor and an optional requested direction for a
/// message page of `thread`: the direction to read in and the sequence number
/// to continue after (exclusive), if any.
///
/// # Errors
/// [`DomainError`] on `cursor` when the cursor belongs to another thread or
/// listing, or on `direction` when it contradicts the cursor's.
pub fn resolve_message_cursor(
    thread: ThreadId,
    cursor: Option<&Cursor>,
    requested: Option<Direction>,
) -> Result<(Direction, Option<i64>), DomainError> {
    match cursor {
        None => Ok((requested.unwrap_or_default(), None)),
        Some(c) => {
            let (dir, seq) = c.for_messages(thread)?;
            if requested.is_some_and(|r| r != dir) {
                return Err(DomainError::new(
                    "direction",
                    "contradicts the cursor's direction; omit it or start a new listing",
                ));
            }
            Ok((dir, Some(seq)))
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    use super::*;

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Forward), Just(Direction::Backward)]
    }

    proptest! {
        #[test]
        fn message_cursors_round_trip(bytes in any::<[u8; 16]>(), seq in 0i64..i64::MAX, dir in direction()) {
            let thread = ThreadId::from_uuid(uuid::Uuid::from_bytes(bytes));
            let c = Cursor::messages(thread, dir, seq);
            let back = Cursor::decode(&c.encode()).unwrap();
            prop_assert_eq!(back, c);
            prop_assert_eq!(back.for_messages(thread).unwrap(), (dir, seq));
            let other = ThreadId::new();
            prop_assert!(back.for_messages(other).is_err());
        }

        #[test]
        fn thread_cursors_round_trip(tenant in "[a-z0-9]{1,20}", last in any::<[u8; 16]>()) {
            let tenant = TenantId::parse(tenant).unwrap();
            let filter = ThreadFilter::default();
            let last = ThreadId::from_uuid(uuid::Uuid::from_bytes(last));
            let c = Cursor::threads(&tenant, &filter, last);
            let back = Cursor::decode(&c.encode()).unwrap();
            prop_assert_eq!(back.for_threads(&tenant, &filter).unwrap(), last);
            let other = TenantId::parse("zz-other").unwrap();
            prop_assert!(back.for_threads(&other, &filter).is_err());
            prop_assert!(back.for_messages(last).is_err());
        }

        #[test]
        fn any_single_byte_edit_is_rejected(seq in 0i64..1_000_000, pos in 0usize..LEN, flip in 1u8..=255) {
            let c = Cursor::messages(ThreadId::new(), Direction::Forward, seq);
            let mut raw = URL_SAFE_NO_PAD.decode(c.encode()).unwrap();
            raw[pos] ^= flip;
            let edited = URL_SAFE_NO_PAD.encode(&raw);
            prop_assert!(Cursor::decode(&edited).is_err());
        }

        #[test]
        fn garbage_never_panics(s in ".{0,80}") {
            let _ = Cursor::decode(&s);
        }
    }

    #[test]
    fn page_size_bounds() {
        assert!(PageSize::new(0).is_err());
        assert!(PageSize::new(1).is_ok());
        assert!(PageSize::new(MAX_PAGE_SIZE).is_ok());
        assert!(PageSize::new(MAX_PAGE_SIZE + 1).is_err());
    }
}
