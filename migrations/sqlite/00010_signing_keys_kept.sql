-- +goose Up
-- A signing key is never deleted, only retired (see the PostgreSQL
-- migration of the same number; SQLite has no 00009).
-- +goose StatementBegin
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys
BEGIN
    SELECT RAISE(ABORT, 'signing keys are never deleted: retire the key instead (errand keys retire)');
END;
-- +goose StatementEnd
-- INSERT OR REPLACE deletes the row it conflicts with without firing
-- delete triggers (SQLite fires them only with recursive_triggers on), so
-- an insert that would take the kid, or the current or next place, of a
-- stored key is refused before it can replace it.
-- +goose StatementBegin
CREATE TRIGGER signing_keys_no_replace BEFORE INSERT ON signing_keys
WHEN EXISTS (SELECT 1 FROM signing_keys
             WHERE kid = NEW.kid OR (state = NEW.state AND NEW.state IN ('current', 'next')))
BEGIN
    SELECT RAISE(ABORT, 'signing keys are never replaced: retire the key instead (errand keys retire)');
END;
-- +goose StatementEnd
