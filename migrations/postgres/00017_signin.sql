-- +goose Up
-- Sign-in for people: server-side browser sessions and the sign-in flows
-- in progress, shared by every replica. A session's id is kept only as
-- its SHA-256 digest, and so is a flow's state; times are microseconds
-- since the epoch, as the one implementation writes them on both dialects.
CREATE TABLE signin_sessions (
    id_sha256   text PRIMARY KEY,
    user_iss    text NOT NULL,
    user_sub    text NOT NULL,
    user_groups text NOT NULL DEFAULT '[]',
    auditor     boolean NOT NULL DEFAULT false,
    admin       boolean NOT NULL DEFAULT false,
    created_at  bigint NOT NULL,
    last_seen   bigint NOT NULL,
    expires_at  bigint NOT NULL
);
CREATE INDEX signin_sessions_user ON signin_sessions (user_iss, user_sub);
CREATE INDEX signin_sessions_expiry ON signin_sessions (expires_at);

CREATE TABLE signin_flows (
    state_sha256  text PRIMARY KEY,
    issuer        text NOT NULL,
    nonce         text NOT NULL,
    verifier      text NOT NULL,
    redirect_uri  text NOT NULL,
    return_to     text NOT NULL,
    created_at    bigint NOT NULL,
    expires_at    bigint NOT NULL
);
CREATE INDEX signin_flows_expiry ON signin_flows (expires_at);
