DROP TRIGGER threads_deletion_log;
DROP TRIGGER messages_deletion_log;
DROP TABLE deletion_log_horizon;
DROP TABLE deletion_log;
