-- Deleting a thread in two steps (issue 10), as on libSQL (migration 9
-- there): `ThreadStore::delete` sets `deleted_at` in one short transaction,
-- after which every read and write treats the thread as missing, and a
-- background sweeper removes its messages (with their vectors and jobs, by
-- cascade) in bounded transactions, then its row (and agent states, by
-- cascade). The row keeps its id until then; the mark is durable, so a sweep
-- cut short resumes at the next start.

ALTER TABLE threads ADD COLUMN deleted_at timestamptz;

-- The sweeper's queue, and the set the searches leave out; partial, so it
-- holds only threads being swept.
CREATE INDEX threads_deleted ON threads (deleted_at, id) WHERE deleted_at IS NOT NULL;
