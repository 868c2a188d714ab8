-- Deferred full-text indexing and embedding jobs.
--
-- Migration 2 indexed every message in FTS5 and queued its embedding job in
-- the statement that inserted it. FTS5 writes a new index segment (and
-- merges older ones) on every commit, and both writes are per row, which made
-- an append about half as fast. From here on an append writes only its
-- messages: everything above a watermark is "not yet indexed / not yet
-- queued", and the adapter catches up in batches (one segment for thousands
-- of messages) before every full-text search, before reading due jobs (the
-- embedding worker's poll) and before counting embedding progress.
--
-- Invariant: a message with rowid > caught_up_to has no full-text entry and
-- no job, and counts as pending unless it already has a vector; one at or
-- below it has exactly one full-text entry, and a vector or a job. Rowids
-- are reused only when the newest message is deleted (`messages` is not
-- AUTOINCREMENT), so the delete trigger lowers the watermark below a deleted
-- message that was the newest: a later message given that rowid is then
-- above it again.

CREATE TABLE semantic_watermark (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    caught_up_to INTEGER NOT NULL CHECK (caught_up_to >= 0)
);
-- Everything stored so far was indexed and queued by migration 2's trigger.
INSERT INTO semantic_watermark (id, caught_up_to) SELECT 1, coalesce(max(rowid), 0) FROM messages;

DROP TRIGGER messages_semantic_insert;
DROP TRIGGER messages_semantic_delete;
DROP TRIGGER messages_semantic_update;

CREATE TRIGGER messages_semantic_delete AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts
    WHERE rowid = OLD.rowid AND OLD.rowid <= (SELECT caught_up_to FROM semantic_watermark);
    DELETE FROM message_vectors WHERE message_rowid = OLD.rowid;
    DELETE FROM embedding_jobs WHERE message_rowid = OLD.rowid;
    UPDATE semantic_watermark SET caught_up_to = min(caught_up_to, OLD.rowid - 1)
    WHERE NOT EXISTS (SELECT 1 FROM messages WHERE rowid > OLD.rowid);
END;

-- Messages are never updated by memlayer; should one be edited behind its
-- back, an indexed one gets its full-text entry replaced and is scheduled
-- for re-embedding (one above the watermark is caught up as it is).
CREATE TRIGGER messages_semantic_update_fts AFTER UPDATE OF content, tool_name, tool_calls ON messages
WHEN NEW.rowid <= (SELECT caught_up_to FROM semantic_watermark) BEGIN
    DELETE FROM messages_fts WHERE rowid = OLD.rowid;
    INSERT INTO messages_fts (rowid, content, tools)
    SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = NEW.rowid;
END;

CREATE TRIGGER messages_semantic_update_vectors AFTER UPDATE OF content, tool_name, tool_calls ON messages BEGIN
    DELETE FROM message_vectors WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
    SELECT NEW.rowid, 0, 0, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER)
    WHERE NEW.rowid <= (SELECT caught_up_to FROM semantic_watermark);
END;
