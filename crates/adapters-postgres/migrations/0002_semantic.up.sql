-- Semantic memory: full-text search, stored embeddings and the embedding job
-- queue.
--
-- pgvector must be installed in the database. CREATE EXTENSION needs a
-- superuser unless the extension is already there (scripts/postgres installs
-- it in template1 and in the application database); IF NOT EXISTS makes
-- this a no-op then, and the application role needs no privilege for it.
CREATE EXTENSION IF NOT EXISTS vector;

-- What lexical search sees of a message: its content, the tool name (tool
-- results) and every tool call's name and arguments (assistant calls),
-- without the call ids. The `simple` configuration lowercases and splits
-- words but neither stems nor drops stop words, like FTS5's unicode61
-- tokenizer in the libSQL adapter: memory is multilingual and full of
-- identifiers, codes and names, which an English stemmer would conflate.
-- (Unlike FTS5 with remove_diacritics, accents are kept: `unaccent` is a
-- contrib module that is not always installed.)
CREATE FUNCTION memlayer_message_document(content text, tool_name text, tool_calls jsonb) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_tsvector('simple'::regconfig,
        content || ' ' || coalesce(tool_name, '') || ' ' || coalesce((
            SELECT string_agg(coalesce(c ->> 'name', '') || ' ' || coalesce(c ->> 'arguments', ''), ' ' ORDER BY i)
            FROM jsonb_array_elements(tool_calls) WITH ORDINALITY AS calls (c, i)), ''));

-- A generated column: a message's full-text entry is written and removed by
-- the statement that writes or removes the message, whatever the path.
ALTER TABLE messages ADD COLUMN document tsvector
    GENERATED ALWAYS AS (memlayer_message_document(content, tool_name, tool_calls)) STORED;
CREATE INDEX messages_document ON messages USING gin (document);

-- One vector per (message, model). `position` is the `scan_vectors` cursor:
-- an identity never handed out twice, and a replaced vector gets a new one.
CREATE TABLE message_vectors (
    position   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    tenant     text        NOT NULL,
    thread_id  uuid        NOT NULL,
    model      text        NOT NULL,
    dim        integer     NOT NULL CHECK (dim > 0),
    embedding  vector      NOT NULL CHECK (vector_dims(embedding) = dim),
    created_at timestamptz NOT NULL,
    UNIQUE (message_id, model)
);
CREATE INDEX message_vectors_model_position ON message_vectors (model, position);
CREATE INDEX message_vectors_tenant_thread ON message_vectors (tenant, thread_id);

-- A message waiting for its embedding (first attempt or a retry).
CREATE TABLE embedding_jobs (
    message_id      uuid        NOT NULL PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    tenant          text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX embedding_jobs_next_attempt_at ON embedding_jobs (next_attempt_at, message_id);

-- Every inserted message gets its embedding job in the statement that
-- inserts it (a statement trigger with a transition table: one INSERT … SELECT
-- per statement, so a COPY of thousands of rows costs one more statement,
-- not one per row).
CREATE FUNCTION memlayer_enqueue_embeddings() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO embedding_jobs (message_id, tenant, attempts, next_attempt_at, last_error, created_at)
    SELECT id, tenant, 0, created_at, NULL, created_at FROM inserted
    ON CONFLICT (message_id) DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_enqueue_embeddings AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION memlayer_enqueue_embeddings();

ALTER TABLE message_vectors ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_vectors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON message_vectors USING (memlayer_tenant_admits(tenant));
ALTER TABLE embedding_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE embedding_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON embedding_jobs USING (memlayer_tenant_admits(tenant));

-- Backfill: schedule every message stored before this migration (the
-- migration runs with every tenant admitted).
INSERT INTO embedding_jobs (message_id, tenant, attempts, next_attempt_at, last_error, created_at)
SELECT id, tenant, 0, now(), NULL, now() FROM messages;
