-- +goose Up
-- Per-task Vault tokens, sealed with a key derived from system_secret. The
-- accessor is also the jti of the task's vault-token credential row.
CREATE TABLE vault_tokens (
    task_id    text PRIMARY KEY REFERENCES tasks (id),
    accessor   text NOT NULL UNIQUE,
    sealed     bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
