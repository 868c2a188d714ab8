-- The deletion log (issue 14), as on libSQL (migration 22 there): every
-- message deleted from a live thread and every thread marked deleted,
-- numbered as logged, written by triggers in the deleting transaction
-- whatever the path. Another process's in-process vector index (`exact`)
-- reads it to forget what this process deleted (a `memlayer prune` beside
-- a running server, servers sharing the database).
--
-- Transactions commit in any order here, so a number can become visible
-- after a higher one: each entry keeps its transaction's id (`xid`), and a
-- reader remembers which transactions were in progress when it last read
-- (`pg_current_snapshot()`), reading their entries again until they end.
-- A deleting transaction has its id before its trigger takes a number
-- (the delete or update wrote first), which is what makes that enough.
--
-- Swept messages (of a thread marked deleted) are not logged: the thread's
-- entry covers them, and no in-process index here removes by position.
-- Entries are purged by age, oldest number first (numbers follow time
-- closely enough, and each insert pays one index less than with an index
-- on the time); `deletion_log_horizon` keeps the newest number purged, so a
-- reader behind it knows it missed entries. The
-- tenant's forced row-level security policy applies as on every table.

CREATE TABLE deletion_log (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    tenant     text        NOT NULL,
    thread_id  uuid        NOT NULL,
    message_id uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deletion_log_xid ON deletion_log (xid);

CREATE TABLE deletion_log_horizon (
    id      integer NOT NULL PRIMARY KEY CHECK (id = 1),
    through bigint  NOT NULL
);
INSERT INTO deletion_log_horizon (id, through) VALUES (1, 0);

ALTER TABLE deletion_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE deletion_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deletion_log USING (memlayer_tenant_admits(tenant));
-- The horizon belongs to no tenant: only `*` access (a purge, a reader of
-- every tenant's entries) sees it.
ALTER TABLE deletion_log_horizon ENABLE ROW LEVEL SECURITY;
ALTER TABLE deletion_log_horizon FORCE ROW LEVEL SECURITY;
CREATE POLICY all_tenants_only ON deletion_log_horizon USING (current_setting('memlayer.tenant', true) = '*');

-- One insert per deleting statement, from its transition table.
CREATE FUNCTION memlayer_log_deleted_messages() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deletion_log (tenant, thread_id, message_id)
    SELECT g.tenant, g.thread_id, g.id FROM gone g
    WHERE EXISTS (SELECT 1 FROM threads t WHERE t.tenant = g.tenant AND t.id = g.thread_id AND t.deleted_at IS NULL);
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_deletion_log AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION memlayer_log_deleted_messages();

CREATE FUNCTION memlayer_log_deleted_thread() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deletion_log (tenant, thread_id) VALUES (NEW.tenant, NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER threads_deletion_log AFTER UPDATE OF deleted_at ON threads
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION memlayer_log_deleted_thread();
