-- Children first: foreign keys are enforced.
DROP TABLE agent_state;
DROP TABLE messages;
DROP TABLE threads;
