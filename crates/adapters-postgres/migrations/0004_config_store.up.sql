-- The configuration store: models, tools, agents (with their ordered tools)
-- and settings, each row owned by a tenant. Version 4, as on libSQL (whose
-- version 3 is libSQL-only), with the same constraints as libSQL's
-- 0004_config_store.
--
-- Conventions of migration 1: ids are UUIDs, times timestamptz, and every
-- table carries its tenant under a forced row-level security policy keyed on
-- the transaction's `memlayer.tenant`. Besides:
-- - text that listings filter or sort on is COLLATE "C": comparisons and
--   ORDER BY are bytewise, as on libSQL and as the ConfigStore contract
--   says, whatever the database's default collation;
-- - integers are bigint: listings bind filter values as 64-bit integers;
-- - JSON (tool parameters, setting values) is `json`, the exact text as
--   libSQL keeps it: these values are never queried, and jsonb would refuse
--   a `\u0000` that libSQL stores;
-- - every column a listing may filter or sort on is NOT NULL;
-- - references are composite (tenant, id) foreign keys, which makes a row
--   naming another tenant's model or tool impossible.

CREATE TABLE config_models (
    id                uuid             NOT NULL PRIMARY KEY,
    tenant            text             NOT NULL,
    name              text COLLATE "C" NOT NULL,
    provider          text COLLATE "C" NOT NULL,
    context_window    bigint           NOT NULL CHECK (context_window > 0),
    max_output_tokens bigint           NOT NULL CHECK (max_output_tokens > 0),
    -- Prices per million tokens.
    input_price       double precision NOT NULL CHECK (input_price >= 0),
    output_price      double precision NOT NULL CHECK (output_price >= 0),
    is_default        boolean          NOT NULL,
    created_at        timestamptz      NOT NULL,
    updated_at        timestamptz      NOT NULL
);
CREATE UNIQUE INDEX config_models_tenant_id ON config_models (tenant, id);
CREATE UNIQUE INDEX config_models_tenant_name ON config_models (tenant, name);
CREATE INDEX config_models_tenant_created ON config_models (tenant, created_at, id);
-- At most one default model per tenant, whatever the code does.
CREATE UNIQUE INDEX config_models_one_default ON config_models (tenant) WHERE is_default;

CREATE TABLE config_tools (
    id          uuid             NOT NULL PRIMARY KEY,
    tenant      text             NOT NULL,
    name        text COLLATE "C" NOT NULL,
    description text COLLATE "C" NOT NULL,
    -- JSON Schema object of the tool's parameters.
    parameters  json             NOT NULL,
    created_at  timestamptz      NOT NULL,
    updated_at  timestamptz      NOT NULL
);
CREATE UNIQUE INDEX config_tools_tenant_id ON config_tools (tenant, id);
CREATE UNIQUE INDEX config_tools_tenant_name ON config_tools (tenant, name);
CREATE INDEX config_tools_tenant_created ON config_tools (tenant, created_at, id);

CREATE TABLE config_agents (
    id            uuid             NOT NULL PRIMARY KEY,
    tenant        text             NOT NULL,
    name          text COLLATE "C" NOT NULL,
    model_id      uuid             NOT NULL,
    system_prompt text             NOT NULL,
    -- Memory options; NULL when unset.
    last_n        bigint           CHECK (last_n > 0),
    top_k         bigint           CHECK (top_k > 0),
    token_budget  bigint           CHECK (token_budget > 0),
    created_at    timestamptz      NOT NULL,
    updated_at    timestamptz      NOT NULL,
    -- No cascade: deleting a model an agent uses fails.
    FOREIGN KEY (tenant, model_id) REFERENCES config_models (tenant, id)
);
CREATE UNIQUE INDEX config_agents_tenant_id ON config_agents (tenant, id);
CREATE UNIQUE INDEX config_agents_tenant_name ON config_agents (tenant, name);
CREATE INDEX config_agents_tenant_created ON config_agents (tenant, created_at, id);
CREATE INDEX config_agents_model ON config_agents (tenant, model_id);

-- An agent's tools, in order. The foreign keys make deleting a tool in use
-- impossible even if the code's own check were skipped; deleting the agent
-- takes its rows along.
CREATE TABLE config_agent_tools (
    tenant   text    NOT NULL,
    agent_id uuid    NOT NULL,
    position integer NOT NULL CHECK (position >= 0),
    tool_id  uuid    NOT NULL,
    PRIMARY KEY (agent_id, position),
    FOREIGN KEY (tenant, agent_id) REFERENCES config_agents (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, tool_id) REFERENCES config_tools (tenant, id)
);
CREATE INDEX config_agent_tools_tool ON config_agent_tools (tenant, tool_id, agent_id);

CREATE TABLE config_settings (
    tenant     text             NOT NULL,
    category   text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    -- Any JSON value.
    value      json             NOT NULL,
    updated_at timestamptz      NOT NULL,
    PRIMARY KEY (tenant, category, key)
);

ALTER TABLE config_models ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_models FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON config_models USING (memlayer_tenant_admits(tenant));
ALTER TABLE config_tools ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_tools FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON config_tools USING (memlayer_tenant_admits(tenant));
ALTER TABLE config_agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON config_agents USING (memlayer_tenant_admits(tenant));
ALTER TABLE config_agent_tools ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_agent_tools FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON config_agent_tools USING (memlayer_tenant_admits(tenant));
ALTER TABLE config_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON config_settings USING (memlayer_tenant_admits(tenant));
