-- Idempotency records of requests sent with an `Idempotency-Key` header:
-- one per tenant and key. A record is in progress while `status` is NULL,
-- completed once `status` and `body` hold the first response, and counts as
-- absent from `expires_at` on (then the purge deletes it).
--
-- Conventions of migration 1: times are INTEGER microseconds since the Unix
-- epoch; the fingerprint is the request's 32-byte SHA-256 digest.
-- (Version 5 is another change's; the two are independent.)

CREATE TABLE idempotency_records (
    tenant          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     BLOB    NOT NULL CHECK (typeof(fingerprint) = 'blob' AND length(fingerprint) = 32),
    status          INTEGER CHECK (status BETWEEN 100 AND 599),
    body            BLOB,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX idempotency_records_expires ON idempotency_records (expires_at);
