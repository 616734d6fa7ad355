-- +goose Up
-- Times are integer microseconds since the Unix epoch (UTC); lists are JSON arrays.
CREATE TABLE tasks (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    version            INTEGER NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'closed', 'expired', 'revoked')),
    agent_iss          TEXT NOT NULL,
    agent_sub          TEXT NOT NULL,
    user_iss           TEXT NOT NULL,
    user_sub           TEXT NOT NULL,
    goal               TEXT NOT NULL,
    scopes             TEXT NOT NULL,
    approved_scopes    TEXT NOT NULL DEFAULT '[]',
    audiences          TEXT NOT NULL,
    approved_audiences TEXT NOT NULL DEFAULT '[]',
    risk               TEXT NOT NULL,
    tool               TEXT NOT NULL DEFAULT '',
    dataset            TEXT NOT NULL DEFAULT '',
    ttl_capped         INTEGER NOT NULL DEFAULT 0,
    deny_reason        TEXT NOT NULL DEFAULT '',
    created_at         INTEGER NOT NULL,
    approved_at        INTEGER,
    expires_at         INTEGER NOT NULL,
    closed_at          INTEGER
);
CREATE INDEX tasks_by_user ON tasks (user_iss, user_sub, seq);
CREATE INDEX tasks_by_agent ON tasks (agent_iss, agent_sub, seq);

CREATE TABLE credentials (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    jti        TEXT NOT NULL UNIQUE,
    task_id    TEXT NOT NULL REFERENCES tasks (id),
    kind       TEXT NOT NULL,
    agent_iss  TEXT NOT NULL,
    agent_sub  TEXT NOT NULL,
    user_iss   TEXT NOT NULL,
    user_sub   TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    audience   TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX credentials_by_task ON credentials (task_id);

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY,
    time       INTEGER NOT NULL,
    type       TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_iss  TEXT NOT NULL DEFAULT '',
    actor_sub  TEXT NOT NULL DEFAULT '',
    task_id    TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_events_by_task ON audit_events (task_id, seq);
CREATE INDEX audit_events_by_time ON audit_events (time);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- +goose StatementBegin
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_jwk  TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('current', 'previous', 'retired')),
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
