-- Storage quotas per tenant (issue 12), as on libSQL (migration 11 there):
-- `messages.stored_bytes` is what a message counts against the byte quota
-- (`Message::approx_bytes`: content, tool fields, tool calls and metadata
-- as compact JSON, plus 320), written by the append that stores it;
-- `threads.stored_messages`/`stored_bytes` are a thread's live messages and
-- their bytes, so a thread delete (a mark) frees them without counting.
--
-- `tenant_usage` holds each tenant's totals over 16 rows (shards, by thread)
-- so that appends to a tenant's different threads do not all wait for one
-- counter row until each commits; the quota check sums them, under a
-- per-tenant advisory lock taken shared by every increment and exclusively
-- by a check near the limit (memlayer_adapters_sql::usage says why that is
-- exact). Under the same forced row-level security as every table.
--
-- Backfill (the migration runs with every tenant admitted): the bytes of
-- messages stored before it, from their stored columns. jsonb prints spaces
-- that memlayer's compact JSON does not have, so a helper measures the
-- compact text of a jsonb value; it is dropped at the end.

ALTER TABLE messages ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0 CHECK (stored_bytes >= 0);
ALTER TABLE threads ADD COLUMN stored_messages bigint NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0;

CREATE FUNCTION memlayer_compact_json_length(j jsonb) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE jsonb_typeof(j)
        WHEN 'object' THEN 2 + coalesce((
            SELECT sum(octet_length(to_json(e.key)::text) + 1 + memlayer_compact_json_length(e.value) + 1) - 1
            FROM jsonb_each(j) AS e), 0)
        WHEN 'array' THEN 2 + coalesce((
            SELECT sum(memlayer_compact_json_length(e.value) + 1) - 1
            FROM jsonb_array_elements(j) AS e(value)), 0)
        ELSE octet_length(j::text)
    END;
END
$$;

UPDATE messages SET stored_bytes = 320
    + octet_length(content)
    + coalesce(octet_length(tool_call_id), 0)
    + coalesce(octet_length(tool_name), 0)
    + coalesce((SELECT sum(octet_length(c ->> 'id') + octet_length(c ->> 'name') + 40
                           + memlayer_compact_json_length(c -> 'arguments'))
                FROM jsonb_array_elements(tool_calls) AS c), 0)
    + memlayer_compact_json_length(metadata);

DROP FUNCTION memlayer_compact_json_length(jsonb);

UPDATE threads SET
    stored_messages = (SELECT count(*) FROM messages WHERE messages.thread_id = threads.id),
    stored_bytes = (SELECT coalesce(sum(stored_bytes), 0) FROM messages WHERE messages.thread_id = threads.id);

CREATE TABLE tenant_usage (
    tenant   text    NOT NULL,
    shard    integer NOT NULL CHECK (shard >= 0),
    threads  bigint  NOT NULL DEFAULT 0,
    messages bigint  NOT NULL DEFAULT 0,
    bytes    bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, shard)
);

INSERT INTO tenant_usage (tenant, shard, threads, messages, bytes)
SELECT tenant, 0, count(*), sum(stored_messages), sum(stored_bytes) FROM threads
WHERE deleted_at IS NULL GROUP BY tenant;

ALTER TABLE tenant_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_usage USING (memlayer_tenant_admits(tenant));
