-- Semantic memory: full-text index, stored embeddings and the embedding job queue.
--
-- Everything here hangs off `messages.rowid` and is kept in step with
-- `messages` by triggers, so any delete path (one message, a whole thread,
-- a raw SQL statement) removes a message's full-text entry, vectors and job
-- in the same transaction.

-- What the full-text index sees of a message: its content, and in `tools`
-- the tool name (tool results) and every tool call's name and arguments
-- (assistant calls), without the JSON keys and call ids of the stored call
-- objects, which would otherwise match every tool call.
CREATE VIEW messages_fts_source AS
SELECT
    rowid   AS message_rowid,
    content AS content,
    trim(coalesce(tool_name, '') || ' ' || coalesce((
        SELECT group_concat(coalesce(json_extract(value, '$.name'), '') || ' '
                            || coalesce(json_extract(value, '$.arguments'), ''), ' ' ORDER BY key)
        FROM json_each(messages.tool_calls)), '')) AS tools
FROM messages;

-- Contentless with deletes (SQLite 3.43+): the text lives once, in
-- `messages`; FTS5 keeps only the inverted index and deletes by rowid.
-- (An external-content table over the view above cannot work: FTS5 reads its
-- content table schema-qualified, and SQLite 3.47 then resolves the view's
-- `json_each` as `main.json_each` and fails, so `rebuild` and column reads
-- break; one over the raw `messages` columns would index JSON keys.)
--
-- Tokenizer `unicode61 remove_diacritics 2`, no stemmer: memory is
-- multilingual and full of identifiers, codes and names, which an English
-- stemmer conflates or mangles; lexical search is there for exact words,
-- the vector ranking covers paraphrase and morphology.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    tools,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- One vector per (message, model). Vectors are little-endian f32 BLOBs.
-- AUTOINCREMENT: the rowid is the `scan_vectors` position and must never be
-- handed out twice, even after the newest row is deleted; a replaced vector
-- gets a new, larger position.
CREATE TABLE message_vectors (
    rowid         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_rowid INTEGER NOT NULL REFERENCES messages (rowid),
    model         TEXT    NOT NULL,
    dim           INTEGER NOT NULL CHECK (dim > 0),
    vector        BLOB    NOT NULL CHECK (typeof(vector) = 'blob' AND length(vector) = 4 * dim),
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX message_vectors_message_model ON message_vectors (message_rowid, model);
-- `scan_vectors`: WHERE model = ? AND rowid > ? ORDER BY rowid.
CREATE INDEX message_vectors_model ON message_vectors (model);

-- A message waiting for its embedding (first attempt or a retry).
CREATE TABLE embedding_jobs (
    message_rowid   INTEGER PRIMARY KEY REFERENCES messages (rowid),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX embedding_jobs_next_attempt_at ON embedding_jobs (next_attempt_at);

-- A message gets its full-text entry and its embedding job in the statement
-- that inserts it.
CREATE TRIGGER messages_semantic_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content, tools)
    SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
    VALUES (NEW.rowid, 0, NEW.created_at, NULL, NEW.created_at);
END;

-- ... and loses them, and its vectors, in the statement that deletes it.
CREATE TRIGGER messages_semantic_delete AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = OLD.rowid;
    DELETE FROM message_vectors WHERE message_rowid = OLD.rowid;
    DELETE FROM embedding_jobs WHERE message_rowid = OLD.rowid;
END;

-- Messages are never updated by memlayer; should one be edited behind its
-- back, its full-text entry follows and it is scheduled for re-embedding.
CREATE TRIGGER messages_semantic_update AFTER UPDATE OF content, tool_name, tool_calls ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = OLD.rowid;
    INSERT INTO messages_fts (rowid, content, tools)
    SELECT message_rowid, content, tools FROM messages_fts_source WHERE message_rowid = NEW.rowid;
    DELETE FROM message_vectors WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
    VALUES (NEW.rowid, 0, 0, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER));
END;

-- Backfill: index and schedule every message stored before this migration.
INSERT INTO messages_fts (rowid, content, tools) SELECT message_rowid, content, tools FROM messages_fts_source;
INSERT INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at)
SELECT rowid, 0, 0, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER) FROM messages;
