-- Working memory (issue 13), as on libSQL (migration 13 there): each
-- document's current version in `working_memory` (one row per tenant and
-- scope: a read is one primary-key lookup whatever the number of versions,
-- a write a compare-and-set of `version` on that row), the newest versions
-- (the current one included) in `working_memory_versions`, written in the
-- same transaction, older ones deleted by a primary-key range.
--
-- A thread's document carries `thread_id`; the composite foreign key to
-- `threads (tenant, id)` removes it with its thread (ON DELETE CASCADE, when
-- the sweep deletes the thread row). A resource's document has no row to
-- refer to (`thread_id` NULL: the key is not checked).
--
-- Conventions of migration 1: timestamptz times, and the tenant column
-- under the same forced row-level security policy as every other table.
-- `content` is text (the JSON text or the Markdown), as `format` says.

CREATE TABLE working_memory (
    tenant     text        NOT NULL,
    scope_kind text        NOT NULL CHECK (scope_kind IN ('resource', 'thread')),
    scope_id   text        NOT NULL,
    thread_id  uuid,
    format     text        NOT NULL CHECK (format IN ('json', 'markdown')),
    content    text        NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, scope_kind, scope_id),
    CHECK ((scope_kind = 'thread') = (thread_id IS NOT NULL)),
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);
CREATE INDEX working_memory_thread ON working_memory (tenant, thread_id) WHERE thread_id IS NOT NULL;

CREATE TABLE working_memory_versions (
    tenant     text        NOT NULL,
    scope_kind text        NOT NULL CHECK (scope_kind IN ('resource', 'thread')),
    scope_id   text        NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    thread_id  uuid,
    format     text        NOT NULL CHECK (format IN ('json', 'markdown')),
    content    text        NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, scope_kind, scope_id, version),
    CHECK ((scope_kind = 'thread') = (thread_id IS NOT NULL)),
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);
CREATE INDEX working_memory_versions_thread ON working_memory_versions (tenant, thread_id) WHERE thread_id IS NOT NULL;

ALTER TABLE working_memory ENABLE ROW LEVEL SECURITY;
ALTER TABLE working_memory FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON working_memory USING (memlayer_tenant_admits(tenant));
ALTER TABLE working_memory_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE working_memory_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON working_memory_versions USING (memlayer_tenant_admits(tenant));

-- An agent's working-memory options (`WorkingMemoryOptions::to_value`, a
-- versioned JSON object); NULL when unset, as for every row written before.
ALTER TABLE config_agents ADD COLUMN working_memory json;
