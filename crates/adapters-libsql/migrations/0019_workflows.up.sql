-- Workflows (issue 16), as on Postgres (migration 19 there; 17 and 18 are
-- other parts' numbers). `workflows` keeps a workflow's status, the
-- earliest time one of its steps may be claimed (`next_wake`: a due ready
-- step or an expiring lease; NULL unless running) and the seq of its last
-- event; `workflow_steps` each step's status and the whole step as JSON
-- text (`body`, the domain's `Step`); `workflow_events` every transition,
-- keyed by workflow and seq (the events' keyset). The tenant is on every
-- table, so the shared SQL is the same on both engines.
-- Conventions of migration 1: ids are 16-byte BLOBs, times INTEGER
-- microseconds since the Unix epoch.

CREATE TABLE workflows (
    tenant      TEXT    NOT NULL,
    id          BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    resource    TEXT,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('draft', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    body        TEXT    NOT NULL,
    next_wake   INTEGER,
    last_event  INTEGER NOT NULL CHECK (last_event >= 0),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX workflows_tenant_listing ON workflows (tenant, id);
CREATE INDEX workflows_wake ON workflows (next_wake, id) WHERE status = 'running';

CREATE TABLE workflow_steps (
    tenant      TEXT    NOT NULL,
    workflow_id BLOB    NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    id          BLOB    NOT NULL UNIQUE,
    position    INTEGER NOT NULL CHECK (position >= 0),
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (workflow_id, position),
    UNIQUE (workflow_id, name)
) WITHOUT ROWID;

CREATE TABLE workflow_events (
    tenant      TEXT    NOT NULL,
    workflow_id BLOB    NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq > 0),
    at          INTEGER NOT NULL,
    step_id     BLOB,
    from_status TEXT,
    to_status   TEXT,
    cause       TEXT    NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;
