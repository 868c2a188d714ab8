-- Per-user scoping by row-level security for the tables that came after
-- migration 12 (Postgres only, like 8 and 12): working memory (13) and
-- summaries with their jobs (14). The same restrictive shape as 12's, ANDed
-- with each table's tenant policy, and free for unbound transactions (the
-- first arm is an InitPlan evaluated once per statement):
-- - a summary or summary job is admitted by its thread, which must be one
--   of the resource's threads (read once per statement);
-- - a working-memory document (current or kept version) of resource scope
--   by its `scope_id`, which must be the bound resource; of thread scope by
--   its `thread_id`, as above.
-- `message_tokens` (15) needs no policy of its own: both of its statements
-- join each row to `messages` and `threads`, whose policies admit only the
-- resource's rows, so a bound transaction reads and writes counts of its
-- resource's messages only.
CREATE POLICY resource_isolation ON thread_summaries AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
CREATE POLICY resource_isolation ON summary_jobs AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));
CREATE POLICY resource_isolation ON working_memory AS RESTRICTIVE
    USING ((SELECT memlayer_unbound())
           OR (scope_kind = 'resource' AND scope_id = current_setting('memlayer.resource', true))
           OR (scope_kind = 'thread' AND thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[])));
CREATE POLICY resource_isolation ON working_memory_versions AS RESTRICTIVE
    USING ((SELECT memlayer_unbound())
           OR (scope_kind = 'resource' AND scope_id = current_setting('memlayer.resource', true))
           OR (scope_kind = 'thread' AND thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[])));
