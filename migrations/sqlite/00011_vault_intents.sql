-- +goose Up
-- Kept in step with PostgreSQL: intents of per-task Vault tokens,
-- committed before Vault is asked for the token; resolved once, never
-- deleted.
CREATE TABLE vault_intents (
    id          TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks (id),
    state       TEXT NOT NULL CHECK (state IN ('pending', 'recorded', 'abandoned', 'orphaned')),
    accessor    TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE INDEX vault_intents_pending ON vault_intents (created_at) WHERE state = 'pending';

-- +goose StatementBegin
CREATE TRIGGER vault_intents_resolve_once BEFORE UPDATE ON vault_intents
WHEN OLD.state <> 'pending' OR NEW.id <> OLD.id OR NEW.task_id <> OLD.task_id OR NEW.created_at <> OLD.created_at
BEGIN
    SELECT RAISE(ABORT, 'vault intent was resolved for good');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER vault_intents_kept BEFORE DELETE ON vault_intents
BEGIN
    SELECT RAISE(ABORT, 'vault intents are kept');
END;
-- +goose StatementEnd
