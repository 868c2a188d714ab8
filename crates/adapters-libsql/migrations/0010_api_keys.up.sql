-- API keys (issue 12): one row per key. A key is found by its public id
-- alone, across tenants (the id is how a request's tenant is learnt), so the
-- id is the primary key; the secret is never stored, only its 32-byte
-- SHA-256. `scopes` is the comma-separated list (`read,write`); a key with
-- `resource_id` set is bound to that resource. Listings read a tenant's
-- keys newest first through `api_keys_tenant`. Version 10 on both backends.
--
-- Conventions of migration 1: times are INTEGER microseconds since the Unix
-- epoch.

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 16 AND id NOT GLOB '*[^0-9a-f]*'),
    tenant       TEXT    NOT NULL,
    name         TEXT,
    scopes       TEXT    NOT NULL CHECK (scopes <> ''),
    resource_id  TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    secret_hash  BLOB    NOT NULL CHECK (typeof(secret_hash) = 'blob' AND length(secret_hash) = 32)
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at DESC, id DESC);
