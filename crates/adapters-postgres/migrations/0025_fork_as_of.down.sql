ALTER TABLE working_memory_versions DROP COLUMN at_seq;
DROP TABLE agent_state_history;
