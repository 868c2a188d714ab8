-- Thread summaries and their jobs (issue 13), as on libSQL (migration 14
-- there): `thread_summaries` keeps every version of a thread's summary
-- (the newest is the current one; `covers_through` is the last message seq
-- it covers, `covered_messages` how many messages all versions folded in),
-- and `summary_jobs` at most one durable job per thread (due, leased,
-- retried with backoff; `requests` counts the asks while it was queued).
--
-- Conventions of migration 1: timestamptz times, the tenant column under
-- the same forced row-level security policy as every other table, and
-- composite `(tenant, thread_id)` foreign keys that cascade when the
-- sweeper removes the thread row. Claims run with `*` tenant access and
-- `FOR UPDATE SKIP LOCKED`, like the embedding queue's.

CREATE TABLE thread_summaries (
    tenant           text        NOT NULL,
    thread_id        uuid        NOT NULL,
    version          bigint      NOT NULL CHECK (version > 0),
    text             text        NOT NULL,
    covers_through   bigint      NOT NULL CHECK (covers_through >= 0),
    covered_messages bigint      NOT NULL CHECK (covered_messages >= 0),
    summarizer       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (thread_id, version),
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);
CREATE INDEX thread_summaries_tenant_thread ON thread_summaries (tenant, thread_id);

CREATE TABLE summary_jobs (
    tenant       text        NOT NULL,
    thread_id    uuid        NOT NULL PRIMARY KEY,
    due_at       timestamptz NOT NULL,
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   text,
    leased_until timestamptz,
    requests     bigint      NOT NULL DEFAULT 1 CHECK (requests > 0),
    created_at   timestamptz NOT NULL,
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);
CREATE INDEX summary_jobs_due ON summary_jobs (due_at, thread_id);
CREATE INDEX summary_jobs_tenant_thread ON summary_jobs (tenant, thread_id);

ALTER TABLE thread_summaries ENABLE ROW LEVEL SECURITY;
ALTER TABLE thread_summaries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON thread_summaries USING (memlayer_tenant_admits(tenant));
ALTER TABLE summary_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE summary_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON summary_jobs USING (memlayer_tenant_admits(tenant));
