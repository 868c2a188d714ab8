-- Every `resource_isolation` policy: the tables of this migration's up, and
-- the vector index tables `PgVectorIndex::open` made at run time.
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT schemaname, tablename FROM pg_policies WHERE policyname = 'resource_isolation' LOOP
        EXECUTE format('DROP POLICY resource_isolation ON %I.%I', p.schemaname, p.tablename);
    END LOOP;
END
$$;
-- Migration 2's trigger function again.
CREATE OR REPLACE FUNCTION memlayer_enqueue_embeddings() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO embedding_jobs (message_id, tenant, attempts, next_attempt_at, last_error, created_at)
    SELECT id, tenant, 0, created_at, NULL, created_at FROM inserted
    ON CONFLICT (message_id) DO NOTHING;
    RETURN NULL;
END
$$;
ALTER TABLE embedding_jobs DROP COLUMN thread_id;
DROP FUNCTION memlayer_resource_threads();
DROP FUNCTION memlayer_unbound();
