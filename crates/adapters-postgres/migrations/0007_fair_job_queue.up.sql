-- A fair embedding job queue with leases, shared by several servers.
--
-- Until now `due_jobs` handed out the oldest jobs of the whole database
-- first, so one tenant's bulk import kept every other tenant's new messages
-- waiting behind it, and two memlayer servers on one database both took the
-- same jobs. The queue is now served round-robin over tenants, each tenant's
-- earliest due job first: the tenants with jobs are found by a skip scan of
-- `embedding_jobs_tenant_due` and each tenant's first due jobs by a range
-- search of it (a LATERAL subquery per tenant), so a batch costs a few index
-- seeks per tenant however long the queue is.
--
-- A worker claims its batch with `FOR UPDATE SKIP LOCKED` and leases it:
-- `leased_until` (NULL = not leased) keeps every other worker off the jobs
-- after the claiming transaction commits, until the job is completed or
-- failed, or the lease runs out (the worker died): then it is handed out
-- again.

ALTER TABLE embedding_jobs ADD COLUMN leased_until timestamptz;
CREATE INDEX embedding_jobs_tenant_due ON embedding_jobs (tenant, next_attempt_at, message_id);
-- Replaced: with it in place the planner walked the whole queue in due
-- order inside each tenant's LATERAL subquery, filtering by tenant (a
-- parameterised tenant does not let it see that the new index is in the
-- same order), which for a small tenant behind a large one meant reading
-- the large one's jobs. Only the rare re-embed (`enqueue_missing`) filtered
-- by due time alone.
DROP INDEX embedding_jobs_next_attempt_at;
