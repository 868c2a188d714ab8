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
-- belongs to no resource, so no bound caller reaches it); a message, vector
-- or agent state by its thread, a job by its message, through a subquery
-- that the threads' (and messages') own policies filter. Nothing else
-- carries the resource, so moving a thread to another resource (a PATCH)
-- stays one row.
--
-- The unbound case, every tenant-wide read and all background work, must
-- cost nothing more: `(SELECT memlayer_unbound())` is an uncorrelated
-- scalar subquery, evaluated once per statement (an InitPlan) rather than
-- per row, and an OR stops at its first true arm, so an unbound statement
-- never runs the per-row subquery (measured: docs/BENCHMARKS.md,
-- "Resource isolation on Postgres").

CREATE FUNCTION memlayer_unbound() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN coalesce(current_setting('memlayer.resource', true), '') = '';

CREATE POLICY resource_isolation ON threads AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR resource_id = current_setting('memlayer.resource', true));
CREATE POLICY resource_isolation ON messages AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR EXISTS (SELECT 1 FROM threads t WHERE t.id = messages.thread_id));
CREATE POLICY resource_isolation ON message_vectors AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR EXISTS (SELECT 1 FROM threads t WHERE t.id = message_vectors.thread_id));
CREATE POLICY resource_isolation ON agent_state AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR EXISTS (SELECT 1 FROM threads t WHERE t.id = agent_state.thread_id));
CREATE POLICY resource_isolation ON embedding_jobs AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR EXISTS (SELECT 1 FROM messages m WHERE m.id = embedding_jobs.message_id));
