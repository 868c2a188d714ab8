-- Back to indexing and queueing in the inserting statement: first catch up
-- on everything above the watermark, then restore migration 2's triggers.
INSERT INTO messages_fts (rowid, content, tools)
SELECT message_rowid, content, tools FROM messages_fts_source
WHERE message_rowid > (SELECT caught_up_to FROM semantic_watermark);
INSERT OR IGNORE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
SELECT m.rowid, 0, m.created_at, NULL, m.created_at FROM messages m
WHERE m.rowid > (SELECT caught_up_to FROM semantic_watermark)
  AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_rowid = m.rowid);

DROP TRIGGER messages_semantic_delete;
DROP TRIGGER messages_semantic_update_fts;
DROP TRIGGER messages_semantic_update_vectors;
DROP TABLE semantic_watermark;

CREATE TRIGGER messages_semantic_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content, tools)
    SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
    VALUES (NEW.rowid, 0, NEW.created_at, NULL, NEW.created_at);
END;

CREATE TRIGGER messages_semantic_delete AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = OLD.rowid;
    DELETE FROM message_vectors WHERE message_rowid = OLD.rowid;
    DELETE FROM embedding_jobs WHERE message_rowid = OLD.rowid;
END;

CREATE TRIGGER messages_semantic_update AFTER UPDATE OF content, tool_name, tool_calls ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = OLD.rowid;
    INSERT INTO messages_fts (rowid, content, tools)
    SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = NEW.rowid;
    DELETE FROM message_vectors WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
    VALUES (NEW.rowid, 0, 0, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
END;
