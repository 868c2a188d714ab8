-- Back to one full-text table for every tenant (the per-tenant tables
-- `lexical_fts_<id>` are dropped by the migration runner first, as their
-- names are only known at run time).
DROP TRIGGER messages_semantic_delete;
DROP TRIGGER messages_semantic_update_fts;
DROP TABLE lexical_stale;
DROP TABLE lexical_tenants;

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    tools,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Everything is indexed and queued on the way down (a full catch-up), so
-- migration 3's invariant holds with the watermark at the newest rowid.
INSERT INTO messages_fts (rowid, content, tools)
SELECT message_rowid, content, tools FROM messages_fts_source;
INSERT OR IGNORE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
SELECT m.rowid, 0, m.created_at, NULL, m.created_at FROM messages m
WHERE m.rowid > (SELECT caught_up_to FROM semantic_watermark)
  AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid);
UPDATE semantic_watermark SET caught_up_to = (SELECT coalesce(max(rowid), 0) FROM messages);

CREATE TRIGGER messages_semantic_delete AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts
    WHERE rowid = OLD.rowid AND OLD.rowid <= (SELECT caught_up_to FROM semantic_watermark);
    DELETE FROM message_vectors WHERE message_rowid = OLD.rowid;
    DELETE FROM embedding_jobs WHERE message_rowid = OLD.rowid;
    UPDATE semantic_watermark SET caught_up_to = min(caught_up_to, OLD.rowid - 1)
    WHERE NOT EXISTS (SELECT 1 FROM messages WHERE rowid > OLD.rowid);
END;

CREATE TRIGGER messages_semantic_update_fts AFTER UPDATE OF content, tool_name, tool_calls ON messages
WHEN NEW.rowid <= (SELECT caught_up_to FROM semantic_watermark) BEGIN
    DELETE FROM messages_fts WHERE rowid = OLD.rowid;
    INSERT INTO messages_fts (rowid, content, tools)
    SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = NEW.rowid;
END;
