-- A fair embedding job queue with leases.
--
-- Until now `due_jobs` handed out the oldest jobs of the whole store first,
-- so one tenant's bulk import of 10,000 messages kept every other tenant's
-- new messages waiting behind it. The queue is now served round-robin over
-- tenants, each tenant's earliest due job first: `tenant` (denormalised from
-- the message's thread, never read as the job's tenant, which still comes
-- from `threads`) lets the reader find the tenants with jobs by a skip scan
-- of `embedding_jobs_tenant_due` and take each tenant's first due jobs by a
-- range search of it, so a batch costs a few index seeks per tenant however
-- long the queue is. '' is the group of a job inserted without a tenant
-- (never by memlayer): still served, never lost.
--
-- `leased_until` (microseconds; 0 = not leased): a claimed job is not handed
-- out again before then, unless completed or failed first, so two processes
-- on one file (a server and `memlayer reembed`) never embed a job twice, and
-- a job of a worker that died comes back when its lease runs out.

ALTER TABLE embedding_jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE embedding_jobs ADD COLUMN leased_until INTEGER NOT NULL DEFAULT 0;

UPDATE embedding_jobs SET tenant = coalesce((
    SELECT t.tenant FROM messages m JOIN threads t ON t.id = m.thread_id WHERE m.rowid = embedding_jobs.message_rowid
), '');

-- Ends in the rowid (`message_rowid`): a tenant's due jobs in due order,
-- oldest message first among equals.
CREATE INDEX embedding_jobs_tenant_due ON embedding_jobs (tenant, next_attempt_at);

-- Migration 3's trigger, now recording the tenant.
DROP TRIGGER messages_semantic_update_vectors;
CREATE TRIGGER messages_semantic_update_vectors AFTER UPDATE OF content, tool_name, tool_calls ON messages BEGIN
    DELETE FROM message_vectors WHERE message_rowid = NEW.rowid;
    INSERT OR REPLACE INTO embedding_jobs (message_rowid, attempts, next_attempt_at, last_error, created_at, tenant)
    SELECT NEW.rowid, 0, 0, NULL, CAST(unixepoch('subsec') * 1000000 AS INTEGER),
           coalesce((SELECT tenant FROM threads WHERE id = NEW.thread_id), '')
    WHERE NEW.rowid <= (SELECT caught_up_to FROM semantic_watermark);
END;
