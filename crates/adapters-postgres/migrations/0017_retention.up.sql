-- Retention (issue 14), as on libSQL (migration 17 there): a tenant's
-- retention policies, the receipts of retention runs and resource erasures
-- (an erasure's row is its durable mark: `finished_at` NULL until done), and
-- the lease that keeps one retention run at a time among the servers
-- sharing the database.
--
-- Conventions of migration 1: timestamptz times, the tenant column under
-- the same forced row-level security policy as every other table. The lease
-- belongs to no tenant: only a transaction with `*` tenant access (the
-- scheduler's) sees it.

CREATE TABLE retention_policies (
    tenant                   text        NOT NULL,
    id                       uuid        NOT NULL PRIMARY KEY,
    agent_id                 text,
    resource_id              text,
    max_thread_age_secs      bigint      CHECK (max_thread_age_secs > 0),
    max_message_age_secs     bigint      CHECK (max_message_age_secs > 0),
    max_messages_per_thread  bigint      CHECK (max_messages_per_thread > 0),
    only_summarized          boolean     NOT NULL DEFAULT false,
    max_threads_per_resource bigint      CHECK (max_threads_per_resource > 0),
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX retention_policies_tenant ON retention_policies (tenant, id);

CREATE TABLE retention_runs (
    tenant      text        NOT NULL,
    id          uuid        NOT NULL PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('prune', 'erase')),
    policy_id   uuid,
    resource_id text,
    dry_run     boolean     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    receipt     jsonb       NOT NULL
);
CREATE INDEX retention_runs_tenant ON retention_runs (tenant, id);
CREATE INDEX retention_runs_unfinished ON retention_runs (id) WHERE finished_at IS NULL;
CREATE INDEX retention_runs_finished ON retention_runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE retention_leases (
    name       text        NOT NULL PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

ALTER TABLE retention_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_policies USING (memlayer_tenant_admits(tenant));
ALTER TABLE retention_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_runs USING (memlayer_tenant_admits(tenant));
ALTER TABLE retention_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_leases FORCE ROW LEVEL SECURITY;
CREATE POLICY all_tenants_only ON retention_leases USING (current_setting('memlayer.tenant', true) = '*');
