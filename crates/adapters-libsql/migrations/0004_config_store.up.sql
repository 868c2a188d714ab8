-- The configuration store: models, tools, agents (with their ordered tools)
-- and settings, each row owned by a tenant.
--
-- Same conventions as migration 1: ids are 16-byte BLOBs (UUIDv7), times
-- INTEGER microseconds since the Unix epoch, JSON is TEXT, booleans are
-- INTEGER 0/1. Every column a listing may filter or sort on is NOT NULL.

CREATE TABLE config_models (
    id                BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    tenant            TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    context_window    INTEGER NOT NULL CHECK (context_window > 0),
    max_output_tokens INTEGER NOT NULL CHECK (max_output_tokens > 0),
    -- Prices per million tokens.
    input_price       REAL    NOT NULL CHECK (input_price >= 0),
    output_price      REAL    NOT NULL CHECK (output_price >= 0),
    is_default        INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX config_models_tenant_name ON config_models (tenant, name);
CREATE INDEX config_models_tenant_created ON config_models (tenant, created_at, id);
-- At most one default model per tenant, whatever the code does.
CREATE UNIQUE INDEX config_models_one_default ON config_models (tenant) WHERE is_default = 1;

CREATE TABLE config_tools (
    id          BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    tenant      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    -- JSON Schema object of the tool's parameters.
    parameters  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX config_tools_tenant_name ON config_tools (tenant, name);
CREATE INDEX config_tools_tenant_created ON config_tools (tenant, created_at, id);

CREATE TABLE config_agents (
    id            BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    tenant        TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    model_id      BLOB    NOT NULL REFERENCES config_models (id),
    system_prompt TEXT    NOT NULL,
    -- Memory options; NULL when unset.
    last_n        INTEGER CHECK (last_n > 0),
    top_k         INTEGER CHECK (top_k > 0),
    token_budget  INTEGER CHECK (token_budget > 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX config_agents_tenant_name ON config_agents (tenant, name);
CREATE INDEX config_agents_tenant_created ON config_agents (tenant, created_at, id);
CREATE INDEX config_agents_model ON config_agents (model_id);

-- An agent's tools, in order. The foreign keys make deleting a tool in use
-- impossible even if the code's own check were skipped.
CREATE TABLE config_agent_tools (
    agent_id BLOB    NOT NULL REFERENCES config_agents (id),
    position INTEGER NOT NULL CHECK (position >= 0),
    tool_id  BLOB    NOT NULL REFERENCES config_tools (id),
    PRIMARY KEY (agent_id, position)
) WITHOUT ROWID;
CREATE INDEX config_agent_tools_tool ON config_agent_tools (tool_id, agent_id);

CREATE TABLE config_settings (
    tenant     TEXT    NOT NULL,
    category   TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    -- Any JSON value.
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, category, key)
) WITHOUT ROWID;
