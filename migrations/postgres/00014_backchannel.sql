-- +goose Up
-- OpenID CIBA backchannel authentication requests (poll mode): the
-- polling state of each, shared by replicas. The auth_req_id is kept only
-- as its SHA-256 digest; a request belongs to one task and to the agent
-- that asked, and gives at most one token (redeemed_at).
CREATE TABLE backchannel_requests (
    id_sha256        text PRIMARY KEY,
    task_id          text NOT NULL UNIQUE REFERENCES tasks (id),
    agent_iss        text NOT NULL,
    agent_sub        text NOT NULL,
    binding_message  text NOT NULL DEFAULT '',
    interval_seconds integer NOT NULL CHECK (interval_seconds > 0),
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    last_poll_at     timestamptz,
    redeemed_at      timestamptz
);
