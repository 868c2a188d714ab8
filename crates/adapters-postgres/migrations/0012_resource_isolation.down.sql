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
DROP FUNCTION memlayer_message_visible(uuid);
DROP FUNCTION memlayer_thread_visible(uuid);
DROP FUNCTION memlayer_unbound();
