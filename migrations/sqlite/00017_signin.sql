-- +goose Up
-- Sign-in for people: server-side browser sessions and the sign-in flows
-- in progress, shared by every replica. A session's id is kept only as
-- its SHA-256 digest, and so is a flow's state; times are microseconds
-- since the epoch, as the one implementation writes them on both dialects.
CREATE TABLE signin_sessions (
    id_sha256   TEXT PRIMARY KEY,
    user_iss    TEXT NOT NULL,
    user_sub    TEXT NOT NULL,
    user_groups TEXT NOT NULL DEFAULT '[]',
    auditor     INTEGER NOT NULL DEFAULT 0,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX signin_sessions_user ON signin_sessions (user_iss, user_sub);
CREATE INDEX signin_sessions_expiry ON signin_sessions (expires_at);

CREATE TABLE signin_flows (
    state_sha256  TEXT PRIMARY KEY,
    issuer        TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    verifier      TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX signin_flows_expiry ON signin_flows (expires_at);
