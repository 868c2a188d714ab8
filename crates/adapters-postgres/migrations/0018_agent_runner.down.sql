ALTER TABLE config_agents DROP COLUMN runner;
