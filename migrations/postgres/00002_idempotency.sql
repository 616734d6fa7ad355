-- +goose Up
-- Idempotent minting: a retry with the same Idempotency-Key and body
-- returns the credential recorded the first time.
ALTER TABLE credentials ADD COLUMN idempotency_key text, ADD COLUMN request_hash text;
CREATE UNIQUE INDEX credentials_idempotency ON credentials (task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
