-- +goose Up
-- Signing-key rotation (see the PostgreSQL migration). SQLite cannot alter
-- a CHECK constraint: the table is rebuilt.
CREATE TABLE signing_keys_new (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    private_key    BLOB NOT NULL,
    public_jwk     TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('next', 'current', 'previous', 'retired')),
    created_at     INTEGER NOT NULL,
    activated_at   INTEGER,
    deactivated_at INTEGER,
    retired_at     INTEGER
);
INSERT INTO signing_keys_new (kid, alg, private_key, public_jwk, state, created_at, activated_at, deactivated_at)
    SELECT kid, alg, private_key, public_jwk, state, created_at,
           CASE WHEN state IN ('current', 'previous') THEN created_at END,
           CASE WHEN state = 'previous' THEN created_at END
    FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';
-- +goose StatementBegin
CREATE TRIGGER signing_keys_forward BEFORE UPDATE ON signing_keys
WHEN NEW.kid <> OLD.kid OR NEW.private_key <> OLD.private_key OR NEW.public_jwk <> OLD.public_jwk OR NEW.alg <> OLD.alg
  OR NOT (NEW.state = OLD.state
    OR (OLD.state = 'next' AND NEW.state IN ('current', 'retired'))
    OR (OLD.state = 'current' AND NEW.state IN ('previous', 'retired'))
    OR (OLD.state = 'previous' AND NEW.state = 'retired'))
BEGIN
    SELECT RAISE(ABORT, 'a signing key only moves forward: next, current, previous, retired');
END;
-- +goose StatementEnd
