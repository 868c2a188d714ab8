ALTER TABLE config_agents DROP COLUMN working_memory;
DROP TABLE working_memory_versions;
DROP TABLE working_memory;
