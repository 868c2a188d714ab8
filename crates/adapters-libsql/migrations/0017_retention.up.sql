-- Retention (issue 14): a tenant's retention policies, the receipts of
-- retention runs and resource erasures, and the lease that keeps one
-- retention run at a time among the servers sharing the database.
--
-- Conventions of migration 1: ids are 16-byte UUID blobs, times INTEGER
-- microseconds since the Unix epoch, booleans 0/1. A policy's rules are
-- NULL when not set and at least 1 otherwise (the domain checks it first and
-- names the field; the CHECKs are the last line). A receipt's counts and id
-- ranges are one versioned JSON object; an erasure's row is its durable mark
-- (`finished_at` NULL until done, resumed after a crash).

CREATE TABLE retention_policies (
    tenant                   TEXT    NOT NULL,
    id                       BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    agent_id                 TEXT,
    resource_id              TEXT,
    max_thread_age_secs      INTEGER CHECK (max_thread_age_secs > 0),
    max_message_age_secs     INTEGER CHECK (max_message_age_secs > 0),
    max_messages_per_thread  INTEGER CHECK (max_messages_per_thread > 0),
    only_summarized          INTEGER NOT NULL DEFAULT 0 CHECK (only_summarized IN (0, 1)),
    max_threads_per_resource INTEGER CHECK (max_threads_per_resource > 0),
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);
CREATE INDEX retention_policies_tenant ON retention_policies (tenant, id);

CREATE TABLE retention_runs (
    tenant      TEXT    NOT NULL,
    id          BLOB    NOT NULL PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),
    kind        TEXT    NOT NULL CHECK (kind IN ('prune', 'erase')),
    policy_id   BLOB,
    resource_id TEXT,
    dry_run     INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    receipt     TEXT    NOT NULL
);
CREATE INDEX retention_runs_tenant ON retention_runs (tenant, id);
CREATE INDEX retention_runs_unfinished ON retention_runs (id) WHERE finished_at IS NULL;
CREATE INDEX retention_runs_finished ON retention_runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE retention_leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
