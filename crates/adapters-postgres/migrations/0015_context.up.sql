-- Context assembly (issue 13), version 15 on both backends (see libSQL's
-- 0015 for the why): per-encoding token counts of messages, written once,
-- going with their message; and an agent's context options.
--
-- Conventions of migration 1: the tenant column under the same forced
-- row-level security policy as every other table.
CREATE TABLE message_tokens (
    tenant     text   NOT NULL,
    message_id uuid   NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    encoding   text   NOT NULL CHECK (length(encoding) BETWEEN 1 AND 64),
    tokens     bigint NOT NULL CHECK (tokens >= 0),
    PRIMARY KEY (message_id, encoding)
);

ALTER TABLE message_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON message_tokens USING (memlayer_tenant_admits(tenant));

ALTER TABLE config_agents ADD COLUMN context jsonb CHECK (context IS NULL OR jsonb_typeof(context) = 'object');
