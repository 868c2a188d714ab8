DROP TABLE tenant_usage;
ALTER TABLE threads DROP COLUMN stored_bytes;
ALTER TABLE threads DROP COLUMN stored_messages;
ALTER TABLE messages DROP COLUMN stored_bytes;
