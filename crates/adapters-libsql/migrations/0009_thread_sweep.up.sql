-- Deleting a thread in two steps (issue 10).
--
-- Deleting a thread used to remove it, its agent states and all its messages
-- (and, by the delete trigger, their vectors, jobs and full-text entries) in
-- one write transaction: for a thread of 100,000 messages that held the one
-- writer for seconds, and every other tenant's append waited behind it.
-- Now `ThreadStore::delete` only sets `deleted_at` (microseconds since the
-- Unix epoch) in one short transaction; from that commit on every read and
-- write treats the thread as missing. A background sweeper then removes its
-- messages in bounded transactions and finally its agent states and row
-- (`ThreadStore::sweep_deleted`). The row keeps its id until then, so no
-- new thread can take it while the sweep runs; the mark is durable, so a
-- sweep cut short by a crash resumes at the next start.
--
-- (Version 8 is Postgres's own; the numbers are shared.)

ALTER TABLE threads ADD COLUMN deleted_at INTEGER;

-- The sweeper's queue: marked threads, oldest mark first. Partial, so it
-- holds only threads being swept and costs live threads nothing; the
-- searches' `NOT IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL)`
-- read it too.
CREATE INDEX threads_deleted ON threads (deleted_at, id) WHERE deleted_at IS NOT NULL;
