ALTER TABLE config_agents DROP COLUMN context;
DROP TABLE message_tokens;
