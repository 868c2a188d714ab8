-- Triggers first (they write to the tables below), then the full-text index
-- (its shadow tables go with it) and its source view, then the tables.
DROP TRIGGER messages_semantic_update;
DROP TRIGGER messages_semantic_delete;
DROP TRIGGER messages_semantic_insert;
DROP TABLE messages_fts;
DROP VIEW messages_fts_source;
DROP TABLE embedding_jobs;
DROP TABLE message_vectors;
