-- Threads still marked deleted are removed whole first (in this one
-- transaction), or they would come back to life without the column.
DELETE FROM agent_state WHERE thread_id IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL);
DELETE FROM messages WHERE thread_id IN (SELECT id FROM threads WHERE deleted_at IS NOT NULL);
DELETE FROM threads WHERE deleted_at IS NOT NULL;
DROP INDEX threads_deleted;
ALTER TABLE threads DROP COLUMN deleted_at;
