-- Idempotency records of requests sent with an `Idempotency-Key` header:
-- one per tenant and key. A record is in progress while `status` is NULL,
-- completed once `status` and `body` hold the first response, and counts as
-- absent from `expires_at` on (then the purge deletes it). Version 6, as on
-- libSQL, with the same constraints as libSQL's 0006_idempotency.
--
-- Conventions of migration 1: times are timestamptz, and the tenant column
-- sits under the same forced row-level security policy as every other
-- table. The fingerprint is the request's 32-byte SHA-256 digest.

CREATE TABLE idempotency_records (
    tenant          text        NOT NULL,
    idempotency_key text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea       NOT NULL CHECK (length(fingerprint) = 32),
    status          integer     CHECK (status BETWEEN 100 AND 599),
    body            bytea,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX idempotency_records_expires ON idempotency_records (expires_at);

ALTER TABLE idempotency_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_records USING (memlayer_tenant_admits(tenant));
