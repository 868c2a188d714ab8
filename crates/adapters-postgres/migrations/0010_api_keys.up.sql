-- API keys (issue 12), as on libSQL (migration 10 there): one row per key,
-- the public id the primary key (unique across tenants), the secret stored
-- only as its 32-byte SHA-256, `scopes` the comma-separated list, a key
-- with `resource_id` bound to that resource.
--
-- Conventions of migration 1: timestamptz times, and the tenant column
-- under the same forced row-level security policy as every other table, so
-- listing and revoking see only the transaction's tenant.
--
-- A request's key must be found before its tenant is known. That one read
-- goes through `memlayer_find_api_key(id)`: it returns at most the one row
-- with that primary key, reading it with `memlayer.tenant` set to `*` and
-- setting the caller's value back before it returns, so the policy admits
-- that row whatever the transaction's tenant and nothing after the call
-- sees more than before it (an error aborts the whole transaction, so no
-- path leaves `*` behind). A function `SET` clause would restore the value
-- by itself, but Postgres lets only a superuser (or a role granted `SET` on
-- the parameter) attach a custom parameter to a function. It is SECURITY
-- INVOKER on purpose: forced row-level security applies to the table's
-- owner too, so a SECURITY DEFINER function owned by the same role would
-- bypass nothing; and a role without SELECT on `api_keys` cannot use it. No
-- other statement reads keys across tenants (last-use updates run with `*`
-- access like the other cross-tenant maintenance, by id).

CREATE TABLE api_keys (
    id           text        NOT NULL PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    tenant       text        NOT NULL,
    name         text,
    scopes       text        NOT NULL CHECK (scopes <> ''),
    resource_id  text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32)
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at DESC, id DESC);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys USING (memlayer_tenant_admits(tenant));

CREATE FUNCTION memlayer_find_api_key(key_id text) RETURNS SETOF api_keys
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    AS $$
DECLARE
    caller text := coalesce(current_setting('memlayer.tenant', true), '');
BEGIN
    PERFORM set_config('memlayer.tenant', '*', true);
    RETURN QUERY SELECT * FROM api_keys WHERE id = key_id;
    PERFORM set_config('memlayer.tenant', caller, true);
END
$$;
