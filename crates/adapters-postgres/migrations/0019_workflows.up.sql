-- Workflows (issue 16), as on libSQL (migration 19 there; 17 and 18 are
-- other parts' numbers). `workflows` keeps a workflow's status, the
-- earliest time one of its steps may be claimed (`next_wake`: a due ready
-- step or an expiring lease; NULL unless running) and the seq of its last
-- event; `workflow_steps` each step's status and the whole step as JSON
-- (`body`, the domain's `Step`); `workflow_events` every transition, keyed
-- by workflow and seq (the events' keyset).
--
-- Claims read `running` workflows by `workflows_wake` and lock them
-- `FOR UPDATE SKIP LOCKED` with `*` tenant access, as the job queues do.
-- Conventions of migration 1: timestamptz times, `COLLATE "C"` for listed
-- text, the tenant column under the forced row-level security policy.

CREATE TABLE workflows (
    tenant      text COLLATE "C" NOT NULL,
    id          uuid        NOT NULL,
    resource    text COLLATE "C",
    name        text COLLATE "C" NOT NULL,
    status      text        NOT NULL CHECK (status IN ('draft', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    body        jsonb       NOT NULL,
    next_wake   timestamptz,
    last_event  bigint      NOT NULL CHECK (last_event >= 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (id)
);
CREATE INDEX workflows_tenant_listing ON workflows (tenant, id DESC);
CREATE INDEX workflows_wake ON workflows (next_wake, id) WHERE status = 'running';

CREATE TABLE workflow_steps (
    tenant      text   NOT NULL,
    workflow_id uuid   NOT NULL,
    id          uuid   NOT NULL UNIQUE,
    position    bigint NOT NULL CHECK (position >= 0),
    name        text COLLATE "C" NOT NULL,
    status      text   NOT NULL,
    body        jsonb  NOT NULL,
    PRIMARY KEY (workflow_id, position),
    UNIQUE (workflow_id, name),
    FOREIGN KEY (tenant, workflow_id) REFERENCES workflows (tenant, id) ON DELETE CASCADE
);

CREATE TABLE workflow_events (
    tenant      text        NOT NULL,
    workflow_id uuid        NOT NULL,
    seq         bigint      NOT NULL CHECK (seq > 0),
    at          timestamptz NOT NULL,
    step_id     uuid,
    from_status text,
    to_status   text,
    cause       text        NOT NULL,
    PRIMARY KEY (workflow_id, seq),
    FOREIGN KEY (tenant, workflow_id) REFERENCES workflows (tenant, id) ON DELETE CASCADE
);

ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflows USING (memlayer_tenant_admits(tenant));
ALTER TABLE workflow_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_steps USING (memlayer_tenant_admits(tenant));
ALTER TABLE workflow_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workflow_events USING (memlayer_tenant_admits(tenant));
