-- The deletion log (issue 14): every message deleted and every thread
-- marked deleted, numbered in commit order, written by triggers in the
-- deleting statement whatever the path (a delete, a retention step, an
-- erasure, the sweep). Another process's in-process indexes read it to
-- forget what this process deleted: a `memlayer prune` beside a running
-- server left the server's HNSW and tantivy indexes with the deleted
-- entries, which took top-k slots until it restarted.
--
-- `AUTOINCREMENT`: a number is never handed out twice, even after the
-- newest entries are purged, so a reader's cursor stays meaningful. libSQL
-- has one writer, so numbers are committed in order. `message_rowid` is the
-- message's position, the key of the in-process full-text index. Swept
-- messages (of threads marked deleted) are logged too: that index removes
-- entries by position only. Entries are purged by age, oldest number first
-- (numbers follow time, so no index on the time is kept: each insert pays
-- one index less); `deletion_log_horizon` keeps the newest number purged,
-- so a reader behind it knows it missed entries.

CREATE TABLE deletion_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT    NOT NULL,
    thread_id     BLOB    NOT NULL CHECK (typeof(thread_id) = 'blob' AND length(thread_id) = 16),
    message_id    BLOB    CHECK (message_id IS NULL OR (typeof(message_id) = 'blob' AND length(message_id) = 16)),
    message_rowid INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE deletion_log_horizon (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
INSERT INTO deletion_log_horizon (id, through) VALUES (1, 0);

CREATE TRIGGER messages_deletion_log AFTER DELETE ON messages BEGIN
    INSERT INTO deletion_log (tenant, thread_id, message_id, message_rowid, created_at)
    SELECT t.tenant, OLD.thread_id, OLD.id, OLD.rowid, CAST(unixepoch('subsec') * 1000000 AS INTEGER)
    FROM threads t WHERE t.id = OLD.thread_id;
END;

CREATE TRIGGER threads_deletion_log AFTER UPDATE OF deleted_at ON threads
WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL BEGIN
    INSERT INTO deletion_log (tenant, thread_id, message_id, message_rowid, created_at)
    VALUES (NEW.tenant, NEW.id, NULL, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
END;
