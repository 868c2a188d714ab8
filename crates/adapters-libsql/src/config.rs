//! Where the database lives and how connections behave.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the database lives.
#[derive(Clone, PartialEq, Eq)]
pub enum LibsqlLocation {
    /// An embedded database file; created with its parent directories when missing.
    File(PathBuf),
    /// A private in-memory database, gone when the backend is dropped (tests).
    Memory,
    /// A remote libSQL server (sqld, Turso), e.g. `libsql://db-org.turso.io`.
    /// Needs the crate feature `remote`.
    Remote {
        /// Server URL.
        url: String,
        /// Bearer token, if the server wants one. Never logged or described.
        auth_token: Option<String>,
    },
}

impl fmt::Debug for LibsqlLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Memory => f.write_str("Memory"),
            Self::Remote { url, auth_token } => f
                .debug_struct("Remote")
                .field("url", &redact_url(url))
                .field("auth_token", &auth_token.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// How to open a [`crate::LibsqlBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibsqlConfig {
    /// Where the database lives.
    pub location: LibsqlLocation,
    /// How long a connection waits for a lock held by another connection or
    /// process before the operation fails with `StoreError::Unavailable`.
    pub busy_timeout: Duration,
    /// Most reader connections open at once (file databases only): a pool
    /// of at most this many, opened on demand and kept for reuse. A read
    /// waits for a free one at most `reader_timeout`.
    pub readers: usize,
    /// How long a read waits for a free reader connection before it fails
    /// with `StoreError::Unavailable` (an overloaded server answers 503
    /// rather than queueing without end).
    pub reader_timeout: Duration,
    /// How long a full-text search, a progress count or `due_jobs` waits for
    /// the background catch-up to index what was appended before it; after
    /// that it reads what is indexed and counts the rest as pending.
    pub index_wait: Duration,
    /// When a commit of an embedded file reaches the disk (`PRAGMA
    /// synchronous` of the writer). Ignored for a remote server, whose own
    /// settings decide.
    pub synchronous: Synchronous,
    /// Deferred commits (zero: off, the default): appends are acknowledged
    /// once written to the append journal beside the file (not synced), and
    /// committed together at most this long after the first of them, or
    /// before any read or other write. Keeps the promise of `Normal` (an
    /// acknowledged append survives a crash of the process: the journal is
    /// applied again at the next open; the last ones may be lost to a power
    /// loss) at a fraction of a commit's cost per append. Needs an embedded
    /// file with `synchronous = Normal`. The writer holds its lock between
    /// commits, so another process writing the same file waits up to this
    /// long more.
    pub commit_delay: Duration,
}

/// `PRAGMA synchronous` of an embedded file's writer connection (the file is
/// always in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is synced to disk before it returns, so before the write
    /// is acknowledged: nothing acknowledged is lost, also across power loss
    /// (the default).
    #[default]
    Full,
    /// A commit only writes the WAL; it is synced at checkpoints. The
    /// database stays consistent, and an acknowledged write survives a crash
    /// of the process, but the last commits before a power loss or an
    /// operating-system crash may be lost. SQLite's recommended setting for
    /// WAL mode, and what Mastra's LibSQLStore sets.
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    #[must_use]
    pub const fn as_sql(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

impl LibsqlConfig {
    /// Default lock wait.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of pooled reader connections.
    pub const DEFAULT_READERS: usize = 4;
    /// Default wait for a free reader connection.
    pub const DEFAULT_READER_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default wait for the background catch-up: generous, since a round
    /// over a few appended messages takes milliseconds and a reader waits
    /// only when it is behind (the server sets its own,
    /// `database.index_wait_ms`).
    pub const DEFAULT_INDEX_WAIT: Duration = Duration::from_secs(10);

    /// An embedded database file at `path`, with default settings.
    #[must_use]
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::at(LibsqlLocation::File(path.into()))
    }

    /// A private in-memory database, with default settings.
    #[must_use]
    pub fn memory() -> Self {
        Self::at(LibsqlLocation::Memory)
    }

    /// A remote libSQL server, with default settings (needs feature `remote`).
    #[must_use]
    pub fn remote(url: impl Into<String>, auth_token: Option<String>) -> Self {
        Self::at(LibsqlLocation::Remote { url: url.into(), auth_token })
    }

    fn at(location: LibsqlLocation) -> Self {
        Self {
            location,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            readers: Self::DEFAULT_READERS,
            reader_timeout: Self::DEFAULT_READER_TIMEOUT,
            index_wait: Self::DEFAULT_INDEX_WAIT,
            synchronous: Synchronous::Full,
            commit_delay: Duration::ZERO,
        }
    }
}

impl Default for LibsqlConfig {
    /// An in-memory database: callers that persist data name a file.
    fn default() -> Self {
        Self::memory()
    }
}

/// A URL without credentials or query string, safe to log.
pub(crate) fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
        }
        None => without_query.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected, "{url}");
        check("libsql://db-org.turso.io", "libsql://db-org.turso.io");
        check("libsql://db-org.turso.io?authToken=secret", "libsql://db-org.turso.io");
        check("https://user:pw@host:8080/x?y=1", "https://host:8080/x");
        check("http://127.0.0.1:8080", "http://127.0.0.1:8080");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = LibsqlConfig::remote("libsql://h", Some("sekrit".into()));
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
