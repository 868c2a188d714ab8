-- A fork "as of" a message (issue 14): agent state and a thread's working
-- memory as they were when the thread's last message was N.
--
-- `agent_state_history` keeps, per thread and agent, the state saved while
-- the thread's `last_seq` was `at_seq`: one row per seq (a later save at the
-- same seq replaces it, since a fork can tell two such saves apart no more
-- than a reader could), the newest 10 seqs kept (adapters-sql
-- `state::HISTORY_KEEP`), written in the transaction that saves the state.
-- A fork at N takes each agent's row with the greatest `at_seq <= N`.
-- `thread_id` refers to the thread, so the deleted-thread sweep removes the
-- rows before the thread row (the foreign key refuses it otherwise).
--
-- `working_memory_versions.at_seq`: the thread's `last_seq` when a thread's
-- version was written (NULL for a resource's). A fork at N takes the newest
-- kept version with `at_seq <= N`.
--
-- Rows written before this migration: each current agent state enters the
-- history, and each thread's kept working-memory version gets `at_seq`, as
-- of the thread's `last_seq` now. That is when they were last true for
-- sure (they were written at or before it), so a fork at an earlier seq
-- finds none of them rather than one that may postdate it.

CREATE TABLE agent_state_history (
    thread_id  BLOB    NOT NULL REFERENCES threads (id) CHECK (typeof(thread_id) = 'blob' AND length(thread_id) = 16),
    agent_id   TEXT    NOT NULL,
    at_seq     INTEGER NOT NULL CHECK (at_seq >= 0),
    -- JSON object.
    state      TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version > 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (thread_id, agent_id, at_seq)
) WITHOUT ROWID;

INSERT INTO agent_state_history (thread_id, agent_id, at_seq, state, version, updated_at)
SELECT a.thread_id, a.agent_id, t.last_seq, a.state, a.version, a.updated_at
FROM agent_state a JOIN threads t ON t.id = a.thread_id;

ALTER TABLE working_memory_versions ADD COLUMN at_seq INTEGER;
UPDATE working_memory_versions
SET at_seq = (SELECT t.last_seq FROM threads t WHERE t.id = working_memory_versions.thread_id)
WHERE thread_id IS NOT NULL;
