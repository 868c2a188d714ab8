-- Threads, messages and agent state.
--
-- Ids are 16-byte BLOBs, the UUID's big-endian bytes (UUIDv7: byte order,
-- which is how SQLite compares BLOBs, is creation order), times are INTEGER
-- microseconds since the Unix epoch, JSON is TEXT.

CREATE TABLE threads (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    tenant      TEXT    NOT NULL,
    resource_id TEXT,
    agent_id    TEXT,
    title       TEXT,
    model       TEXT,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    -- The last sequence number handed out; the next append starts at last_seq + 1.
    last_seq    INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Listings are keyset scans newest first within a tenant, optionally narrowed
-- by resource or agent: each has an index ending in id so the scan stays flat.
CREATE UNIQUE INDEX threads_tenant_id ON threads (tenant, id);
CREATE INDEX threads_tenant_resource_id ON threads (tenant, resource_id, id);
CREATE INDEX threads_tenant_agent_id ON threads (tenant, agent_id, id);

-- A rowid table on purpose: full-text (FTS5) and vector indexes added later
-- refer to messages by rowid.
CREATE TABLE messages (
    rowid          INTEGER PRIMARY KEY,
    id             BLOB    NOT NULL CHECK (typeof(id) = 'blob' AND length(id) = 16),
    thread_id      BLOB    NOT NULL REFERENCES threads (id) CHECK (typeof(thread_id) = 'blob' AND length(thread_id) = 16),
    seq            INTEGER NOT NULL CHECK (seq > 0),
    role           TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content        TEXT    NOT NULL,
    tool_call_id   TEXT,
    tool_name      TEXT,
    -- JSON array of tool calls; NULL when there are none.
    tool_calls     TEXT,
    metadata       TEXT    NOT NULL DEFAULT '{}',
    token_count    INTEGER,
    token_model    TEXT,
    token_encoding TEXT,
    token_exact    INTEGER CHECK (token_exact IN (0, 1)),
    created_at     INTEGER NOT NULL
);

-- Paging is an index range scan on (thread_id, seq); it also makes a
-- duplicate sequence number impossible.
CREATE UNIQUE INDEX messages_thread_seq ON messages (thread_id, seq);
CREATE UNIQUE INDEX messages_id ON messages (id);

CREATE TABLE agent_state (
    thread_id  BLOB    NOT NULL REFERENCES threads (id) CHECK (typeof(thread_id) = 'blob' AND length(thread_id) = 16),
    agent_id   TEXT    NOT NULL,
    -- JSON object.
    state      TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (thread_id, agent_id)
) WITHOUT ROWID;
