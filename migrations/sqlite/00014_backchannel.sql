-- +goose Up
-- Kept in step with PostgreSQL: OpenID CIBA backchannel authentication
-- requests, their auth_req_id kept only as a SHA-256 digest.
CREATE TABLE backchannel_requests (
    id_sha256        TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL UNIQUE REFERENCES tasks (id),
    agent_iss        TEXT NOT NULL,
    agent_sub        TEXT NOT NULL,
    binding_message  TEXT NOT NULL DEFAULT '',
    interval_seconds INTEGER NOT NULL CHECK (interval_seconds > 0),
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    last_poll_at     INTEGER,
    redeemed_at      INTEGER
);
