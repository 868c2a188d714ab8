DROP TRIGGER threads_deletion_log ON threads;
DROP FUNCTION memlayer_log_deleted_thread();
DROP TRIGGER messages_deletion_log ON messages;
DROP FUNCTION memlayer_log_deleted_messages();
DROP TABLE deletion_log_horizon;
DROP TABLE deletion_log;
