-- Threads, messages and agent state.
--
-- Ids are UUIDs (v7: creation order), times are timestamptz (microseconds,
-- what the domain keeps), JSON is jsonb. Every table carries its tenant, and
-- row-level security admits only the rows of the tenant set for the
-- transaction (`set_config('memlayer.tenant', …, true)`, done by the adapter
-- at the start of every transaction; `*` admits every tenant, for work that
-- spans tenants). FORCE makes the policies bind the table owner too; only a
-- superuser or a BYPASSRLS role escapes them, and memlayer connects as
-- neither. With no tenant set, nothing is visible and nothing can be written.

CREATE FUNCTION memlayer_tenant_admits(row_tenant text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN row_tenant = current_setting('memlayer.tenant', true)
        OR current_setting('memlayer.tenant', true) = '*';

CREATE TABLE threads (
    id          uuid        NOT NULL PRIMARY KEY,
    tenant      text        NOT NULL,
    resource_id text,
    agent_id    text,
    title       text,
    model       text,
    metadata    jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- The last sequence number handed out; the next append starts at last_seq + 1.
    last_seq    bigint      NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Listings are keyset scans newest first within a tenant, optionally narrowed
-- by resource or agent; (tenant, id) is also the target of the children's
-- foreign keys, which makes a row of another tenant's thread impossible.
CREATE UNIQUE INDEX threads_tenant_id ON threads (tenant, id);
CREATE INDEX threads_tenant_resource_id ON threads (tenant, resource_id, id);
CREATE INDEX threads_tenant_agent_id ON threads (tenant, agent_id, id);

CREATE TABLE messages (
    id             uuid        NOT NULL PRIMARY KEY,
    tenant         text        NOT NULL,
    thread_id      uuid        NOT NULL,
    seq            bigint      NOT NULL CHECK (seq > 0),
    role           text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content        text        NOT NULL,
    tool_call_id   text,
    tool_name      text,
    -- JSON array of tool calls; NULL when there are none.
    tool_calls     jsonb       CHECK (tool_calls IS NULL OR jsonb_typeof(tool_calls) = 'array'),
    metadata       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    token_count    bigint      CHECK (token_count >= 0),
    token_model    text,
    token_encoding text,
    token_exact    boolean,
    created_at     timestamptz NOT NULL,
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);

-- Paging is an index range scan on (thread_id, seq); it also makes a
-- duplicate sequence number impossible.
CREATE UNIQUE INDEX messages_thread_seq ON messages (thread_id, seq);

CREATE TABLE agent_state (
    tenant     text        NOT NULL,
    thread_id  uuid        NOT NULL,
    agent_id   text        NOT NULL,
    state      jsonb       NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (thread_id, agent_id),
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);
CREATE INDEX agent_state_tenant_thread ON agent_state (tenant, thread_id);

ALTER TABLE threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE threads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON threads USING (memlayer_tenant_admits(tenant));
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages USING (memlayer_tenant_admits(tenant));
ALTER TABLE agent_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_state FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_state USING (memlayer_tenant_admits(tenant));
