-- +goose Up
-- Idempotent minting: a retry with the same Idempotency-Key and body
-- returns the credential recorded the first time.
ALTER TABLE credentials ADD COLUMN idempotency_key TEXT;
ALTER TABLE credentials ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX credentials_idempotency ON credentials (task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
