-- +goose Up
-- Kept in step with PostgreSQL: the DPoP key a credential is bound to
-- ('' for a bearer token) and whether a task requires bound tokens, both
-- fixed once written.
ALTER TABLE credentials ADD COLUMN jkt TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN require_dpop INTEGER NOT NULL DEFAULT 0;

-- +goose StatementBegin
CREATE TRIGGER credentials_jkt_fixed BEFORE UPDATE ON credentials
WHEN NEW.jkt IS NOT OLD.jkt
BEGIN
    SELECT RAISE(ABORT, 'a credential''s binding may not change');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER tasks_require_dpop_fixed BEFORE UPDATE ON tasks
WHEN NEW.require_dpop IS NOT OLD.require_dpop
BEGIN
    SELECT RAISE(ABORT, 'a task''s DPoP requirement may not change');
END;
-- +goose StatementEnd
