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
-- or agent state by its thread, a job by its message, through a lookup that
-- the threads' (and messages') own policies filter. Nothing else carries
-- the resource, so moving a thread to another resource (a PATCH) stays one
-- row.
--
-- The unbound case, every tenant-wide read and all background work, must
-- cost nothing more: `(SELECT memlayer_unbound())` is an uncorrelated
-- scalar subquery, evaluated once per statement (an InitPlan), and an OR
-- stops at its first true arm, so an unbound statement never runs the
-- lookup. The lookups are PL/pgSQL functions declared cheap (COST 1), not
-- inline EXISTS subqueries: the planner costs an inline subquery as if it
-- ran for every row, and chose nested loops over hash joins for
-- tenant-wide counts (48 ms instead of 13 ms for 20,000 messages, measured
-- with EXPLAIN ANALYZE); a function call it costs as what it is declared.
-- For a bound caller each row it reads pays one primary-key lookup
-- (measured: docs/BENCHMARKS.md, "Resource isolation on Postgres").

CREATE FUNCTION memlayer_unbound() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN coalesce(current_setting('memlayer.resource', true), '') = '';

-- Whether the thread is visible to this transaction (the threads' policies
-- decide: tenant and resource).
CREATE FUNCTION memlayer_thread_visible(thread uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE COST 1 AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM threads WHERE id = thread);
END
$$;

-- Whether the message is visible to this transaction (its policies decide).
CREATE FUNCTION memlayer_message_visible(message uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE COST 1 AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM messages WHERE id = message);
END
$$;

CREATE POLICY resource_isolation ON threads AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR resource_id = current_setting('memlayer.resource', true));
CREATE POLICY resource_isolation ON messages AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR memlayer_thread_visible(thread_id));
CREATE POLICY resource_isolation ON message_vectors AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR memlayer_thread_visible(thread_id));
CREATE POLICY resource_isolation ON agent_state AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR memlayer_thread_visible(thread_id));
CREATE POLICY resource_isolation ON embedding_jobs AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR memlayer_message_visible(message_id));
