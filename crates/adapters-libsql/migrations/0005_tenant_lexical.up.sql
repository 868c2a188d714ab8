-- Full-text statistics per tenant, and a watermark that follows reused rowids.
--
-- Until now one FTS5 table served every tenant, and BM25's statistics (the
-- number of rows, the average length, how many rows hold a word) are those
-- of the whole table: one tenant's scores moved when another tenant wrote,
-- which told it whether another tenant's memory held a word. From here on
-- each tenant has its own FTS5 table, `lexical_fts_<id>` with `<id>` from
-- `lexical_tenants`, created by the catch-up when the tenant's first message
-- is indexed, so every statistic BM25 uses is the tenant's own.
--
-- Triggers cannot name a table chosen at run time, so a deleted (or edited)
-- message that was indexed is queued in `lexical_stale` with its tenant's
-- table; the catch-up removes (or re-indexes) it before anything else, and
-- searches leave queued rowids out meanwhile.
--
-- Migration 3's delete trigger lowered the watermark to just below a deleted
-- message when it was the newest, but SQLite hands out `max(rowid) + 1`:
-- after deleting several of the newest messages (a whole thread), rowids
-- below the lowered watermark were handed out again and their messages
-- never got a full-text entry or an embedding job. The watermark now drops
-- to the newest remaining rowid whenever it is above it.

DROP TRIGGER messages_semantic_delete;
DROP TRIGGER messages_semantic_update_fts;
DROP TABLE messages_fts;

CREATE TABLE lexical_tenants (
    id     INTEGER PRIMARY KEY,
    tenant TEXT    NOT NULL UNIQUE
);

-- Indexed messages whose full-text entry is out of date: deleted
-- (`reindex` 0) or edited behind memlayer's back (`reindex` 1).
CREATE TABLE lexical_stale (
    message_rowid INTEGER PRIMARY KEY,
    tenant_id     INTEGER NOT NULL REFERENCES lexical_tenants (id),
    reindex       INTEGER NOT NULL CHECK (reindex IN (0, 1))
);

CREATE TRIGGER messages_semantic_delete AFTER DELETE ON messages BEGIN
    INSERT OR REPLACE INTO lexical_stale (message_rowid, tenant_id, reindex)
    SELECT OLD.rowid, l.id, 0 FROM threads t JOIN lexical_tenants l ON l.tenant = t.tenant
    WHERE t.id = OLD.thread_id AND OLD.rowid <= (SELECT caught_up_to FROM semantic_watermark);
    DELETE FROM message_vectors WHERE message_rowid = OLD.rowid;
    DELETE FROM embedding_jobs WHERE message_rowid = OLD.rowid;
    UPDATE semantic_watermark SET caught_up_to = (SELECT coalesce(max(rowid), 0) FROM messages)
    WHERE caught_up_to > (SELECT coalesce(max(rowid), 0) FROM messages);
END;

CREATE TRIGGER messages_semantic_update_fts AFTER UPDATE OF content, tool_name, tool_calls ON messages
WHEN NEW.rowid <= (SELECT caught_up_to FROM semantic_watermark) BEGIN
    INSERT OR REPLACE INTO lexical_stale (message_rowid, tenant_id, reindex)
    SELECT NEW.rowid, l.id, 1 FROM threads t JOIN lexical_tenants l ON l.tenant = t.tenant
    WHERE t.id = NEW.thread_id;
END;

-- Everything is indexed again, into the tenants' own tables, by the
-- catch-up. This also repairs what the old trigger lost: every message
-- without a vector gets its job back (INSERT OR IGNORE keeps existing ones).
UPDATE semantic_watermark SET caught_up_to = 0;
