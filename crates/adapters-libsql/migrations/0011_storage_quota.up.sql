-- Storage quotas per tenant (issue 12): what each tenant stores, counted as
-- it changes, so a quota check reads a few rows instead of counting.
--
-- `messages.stored_bytes` is what a message counts against the byte quota:
-- `Message::approx_bytes` (its content, tool fields, tool calls and metadata
-- as compact JSON, plus 320), written by the append that stores it, so a
-- delete takes back exactly what was counted. `threads.stored_messages` and
-- `threads.stored_bytes` are a thread's live messages and their bytes, kept
-- by appends and message deletes, so a thread delete (a mark, migration 9)
-- frees what the thread held without counting its messages.
--
-- `tenant_usage` holds each tenant's totals: live threads (not marked
-- deleted), their messages and bytes, as the sum of the tenant's rows (one
-- per shard; libSQL writes only shard 0, every write being serial on its
-- one writer; Postgres spreads a tenant's writes over 16). Every write that
-- changes them does so in its own transaction (memlayer_adapters_sql::usage).
--
-- Backfill: the bytes of messages stored before this migration are computed
-- here from their stored columns by the same rule (their metadata and tool
-- calls are the compact JSON memlayer wrote), then the threads' and tenants'
-- counts from them.

ALTER TABLE messages ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0 CHECK (stored_bytes >= 0);
ALTER TABLE threads ADD COLUMN stored_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;

UPDATE messages SET stored_bytes = 320
    + length(CAST(content AS BLOB))
    + coalesce(length(CAST(tool_call_id AS BLOB)), 0)
    + coalesce(length(CAST(tool_name AS BLOB)), 0)
    + coalesce((SELECT sum(length(CAST(c.value ->> '$.id' AS BLOB)) + length(CAST(c.value ->> '$.name' AS BLOB))
                           + 40 + length(CAST(c.value -> '$.arguments' AS BLOB)))
                FROM json_each(messages.tool_calls) AS c), 0)
    + length(CAST(metadata AS BLOB));

UPDATE threads SET
    stored_messages = (SELECT count(*) FROM messages WHERE messages.thread_id = threads.id),
    stored_bytes = (SELECT coalesce(sum(stored_bytes), 0) FROM messages WHERE messages.thread_id = threads.id);

CREATE TABLE tenant_usage (
    tenant   TEXT    NOT NULL,
    shard    INTEGER NOT NULL CHECK (shard >= 0),
    threads  INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    bytes    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, shard)
) WITHOUT ROWID;

INSERT INTO tenant_usage (tenant, shard, threads, messages, bytes)
SELECT tenant, 0, count(*), sum(stored_messages), sum(stored_bytes) FROM threads
WHERE deleted_at IS NULL GROUP BY tenant;
