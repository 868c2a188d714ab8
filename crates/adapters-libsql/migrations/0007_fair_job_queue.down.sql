DROP TRIGGER messages_semantic_update_vectors;
CREATE TRIGGER messages_semantic_update_vectors AFTER UPDATE OF content, tool_name, tool_calls ON messages BEGIN
    DELETE FROM message_vectors WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
    SELECT NEW.rowid, 0, 0, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER)
    WHERE NEW.rowid <= (SELECT caught_up_to FROM semantic_watermark);
END;
DROP INDEX embedding_jobs_tenant_due;
ALTER TABLE embedding_jobs DROP COLUMN leased_until;
ALTER TABLE embedding_jobs DROP COLUMN tenant;
