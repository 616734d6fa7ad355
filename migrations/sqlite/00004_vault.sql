-- +goose Up
-- Per-task Vault tokens, sealed with a key derived from system_secret. The
-- accessor is also the jti of the task's vault-token credential row.
CREATE TABLE vault_tokens (
    task_id    TEXT PRIMARY KEY REFERENCES tasks (id),
    accessor   TEXT NOT NULL UNIQUE,
    sealed     BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
