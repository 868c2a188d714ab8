-- A fork "as of" a message (issue 14), as on libSQL (migration 25 there):
-- `agent_state_history` keeps, per thread and agent, the state saved while
-- the thread's `last_seq` was `at_seq` (one row per seq, the newest 10 seqs,
-- written in the transaction that saves the state), and
-- `working_memory_versions.at_seq` the thread's `last_seq` when a thread's
-- version was written. A fork at N takes the newest of each with
-- `at_seq <= N`. The history goes with its thread (ON DELETE CASCADE, when
-- the sweep deletes the thread row), under the tenant policy and the
-- resource policy of `agent_state`.
--
-- Rows written before this migration are dated as of the thread's
-- `last_seq` now, when they were last true for sure: a fork at an earlier
-- seq finds none of them rather than one that may postdate it.

CREATE TABLE agent_state_history (
    tenant     text        NOT NULL,
    thread_id  uuid        NOT NULL,
    agent_id   text        NOT NULL,
    at_seq     bigint      NOT NULL CHECK (at_seq >= 0),
    state      jsonb       NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (thread_id, agent_id, at_seq),
    FOREIGN KEY (tenant, thread_id) REFERENCES threads (tenant, id) ON DELETE CASCADE
);
CREATE INDEX agent_state_history_tenant_thread ON agent_state_history (tenant, thread_id);

ALTER TABLE agent_state_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_state_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_state_history USING (memlayer_tenant_admits(tenant));
CREATE POLICY resource_isolation ON agent_state_history AS RESTRICTIVE
    USING ((SELECT memlayer_unbound()) OR thread_id = ANY ((SELECT memlayer_resource_threads())::uuid[]));

INSERT INTO agent_state_history (tenant, thread_id, agent_id, at_seq, state, version, updated_at)
SELECT a.tenant, a.thread_id, a.agent_id, t.last_seq, a.state, a.version, a.updated_at
FROM agent_state a JOIN threads t ON t.tenant = a.tenant AND t.id = a.thread_id;

ALTER TABLE working_memory_versions ADD COLUMN at_seq bigint CHECK (at_seq IS NULL OR at_seq >= 0);
UPDATE working_memory_versions v SET at_seq = t.last_seq
FROM threads t WHERE t.tenant = v.tenant AND t.id = v.thread_id;
