-- Threads still marked deleted are removed whole first (messages, vectors,
-- jobs and agent states by cascade), or they would come back to life
-- without the column. Every tenant's rows: row-level security admits all
-- with `memlayer.tenant` = '*'.
SELECT set_config('memlayer.tenant', '*', true);
DELETE FROM threads WHERE deleted_at IS NOT NULL;
DROP INDEX threads_deleted;
ALTER TABLE threads DROP COLUMN deleted_at;
