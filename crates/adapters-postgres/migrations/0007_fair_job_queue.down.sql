CREATE INDEX embedding_jobs_next_attempt_at ON embedding_jobs (next_attempt_at, message_id);
DROP INDEX embedding_jobs_tenant_due;
ALTER TABLE embedding_jobs DROP COLUMN leased_until;
