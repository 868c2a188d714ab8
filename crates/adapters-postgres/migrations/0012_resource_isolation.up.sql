-- Per-user scoping by row-level security (issue 12): a transaction bound to
-- a resource (`memlayer.resource`, set with `memlayer.tenant` at the start
-- of every transaction; empty for the whole tenant) sees and writes only
-- the threads of that resource, and only their messages, vectors, jobs and
-- agent states. The memory services check a bound caller's resource on
-- both backends; this makes a query that forgot to (a bug, a new code path)
-- still see nothing of another resource. libSQL has no counterpart
-- (Postgres only, like version 8).
--
-- Restrictive policies, ANDed with each table's tenant policy (migrations
-- 1, 2): a thread is admitted by its `resource_id` (a thread without one
-- belongs to no resource, so no bound caller reaches it); a message,
-- vector, agent state or job by its thread, which must be one of the
-- resource's threads, read once per statement. Nothing else carries the
-- resource, so moving a thread to another resource (a PATCH) stays one
-- row; jobs gain their message's `thread_id` for it (filled by the trigger
-- that queues them, and by `enqueue_missing`).
--
-- What this costs, measured (docs/BENCHMARKS.md, "Resource isolation on
-- Postgres"):
-- - unbound (every tenant-wide read, all background work): nothing per row.
--   `(SELECT memlayer_unbound())` is an uncorrelated scalar subquery, an
--   InitPlan evaluated once per statement, and an OR stops at its first
--   true arm, so the second arm (another InitPlan) is never evaluated;
-- - bound: one index read of the resource's thread ids per statement,
--   then an array membership test per row.
-- A lookup per row in the policy was tried first: as an inline EXISTS the
-- planner costed the subquery as if it ran for every row even when the
-- first arm short-circuits it, and chose a nested loop for tenant-wide
-- counts (48 ms against 13 ms for 20,000 messages); as a PL/pgSQL function
-- each row of a bound read paid a call (a bound embedding count over one
-- resource took 0.4 s).

CREATE FUNCTION memlayer_unbound() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN coalesce(current_setting('memlayer.resource', true), '') = '';

-- The threads of the transaction's tenant and resource, by the index of
-- migration 1 (threads_tenant_resource_id).
CREATE FUNCTION memlayer_resource_threads() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (SELECT coalesce(array_agg(id), '{}') FROM threads
            WHERE tenant = current_setting('memlayer.tenant', true)
              AND resource_id = current_setting('memlayer.resource', true));

ALTER TABLE embedding_jobs ADD COLUMN thread_id uuid;
UPDATE embedding_jobs j SET thread_id = m.thread_id FROM messages m WHERE m.id = j.message_id;
ALTER TABLE embedding_jobs ALTER COLUMN thread_id SET NOT NULL;

CREATE OR REPLACE FUNCTION memlayer_enqueue_embeddings() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO embedding_jobs (message_id, tenant, thread_id, attempts, next_attempt_at, last_error, created_at)
    SELECT id, tenant, thread_id, 0, created_at, NULL, created_at FROM inserted
    ON CONFLICT (message_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE POLICY resource_isolation ON threads AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR resource_id = current_setting('memlayer.resource', true));
CREATE POLICY resource_isolation ON messages AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
CREATE POLICY resource_isolation ON message_vectors AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
CREATE POLICY resource_isolation ON agent_state AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
CREATE POLICY resource_isolation ON embedding_jobs AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
