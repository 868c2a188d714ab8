-- Working memory (issue 13): a versioned document per resource or per
-- thread, and an agent's options for it.
--
-- `working_memory` holds each document's current version, one row per
-- (tenant, scope_kind, scope_id): a read is one primary-key lookup whatever
-- the number of versions, and a write checks and bumps `version` on that row
-- (optimistic concurrency, as agent state). `working_memory_versions` keeps
-- the newest versions, the current one included (the agent's
-- `memory.working_memory.versions`, 10 by default), written in the same
-- transaction; older ones are deleted by a primary-key range.
--
-- A thread's document (`scope_kind = 'thread'`, `scope_id` the thread's id
-- as text) also carries `thread_id`, so the foreign key keeps it from
-- outliving its thread: the deleted-thread sweep removes it before the
-- thread row. A resource's document has no row to refer to.
--
-- Conventions of migration 1: ids are 16-byte BLOBs, times INTEGER
-- microseconds since the Unix epoch; `content` is the JSON text or the
-- Markdown text, as `format` says. (Versions 11 and 12 are another
-- change's; the numbers are shared.)

CREATE TABLE working_memory (
    tenant     TEXT    NOT NULL,
    scope_kind TEXT    NOT NULL CHECK (scope_kind IN ('resource', 'thread')),
    scope_id   TEXT    NOT NULL,
    thread_id  BLOB    REFERENCES threads (id) CHECK (thread_id IS NULL OR (typeof(thread_id) = 'blob' AND length(thread_id) = 16)),
    format     TEXT    NOT NULL CHECK (format IN ('json', 'markdown')),
    content    TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope_kind, scope_id),
    CHECK ((scope_kind = 'thread') = (thread_id IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX working_memory_thread ON working_memory (thread_id) WHERE thread_id IS NOT NULL;

CREATE TABLE working_memory_versions (
    tenant     TEXT    NOT NULL,
    scope_kind TEXT    NOT NULL CHECK (scope_kind IN ('resource', 'thread')),
    scope_id   TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    thread_id  BLOB    REFERENCES threads (id) CHECK (thread_id IS NULL OR (typeof(thread_id) = 'blob' AND length(thread_id) = 16)),
    format     TEXT    NOT NULL CHECK (format IN ('json', 'markdown')),
    content    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope_kind, scope_id, version),
    CHECK ((scope_kind = 'thread') = (thread_id IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX working_memory_versions_thread ON working_memory_versions (thread_id) WHERE thread_id IS NOT NULL;

-- An agent's working-memory options (`WorkingMemoryOptions::to_value`, a
-- versioned JSON object); NULL when unset, as for every row written before.
ALTER TABLE config_agents ADD COLUMN working_memory TEXT;
