-- +goose Up
CREATE TABLE tasks (
    id                 text PRIMARY KEY,
    seq                bigserial NOT NULL UNIQUE,
    version            integer NOT NULL,
    status             text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'closed', 'expired', 'revoked')),
    agent_iss          text NOT NULL,
    agent_sub          text NOT NULL,
    user_iss           text NOT NULL,
    user_sub           text NOT NULL,
    goal               text NOT NULL,
    scopes             text[] NOT NULL,
    approved_scopes    text[] NOT NULL DEFAULT '{}',
    audiences          text[] NOT NULL,
    approved_audiences text[] NOT NULL DEFAULT '{}',
    risk               text NOT NULL,
    tool               text NOT NULL DEFAULT '',
    dataset            text NOT NULL DEFAULT '',
    ttl_capped         boolean NOT NULL DEFAULT false,
    deny_reason        text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    approved_at        timestamptz,
    expires_at         timestamptz NOT NULL,
    closed_at          timestamptz
);
CREATE INDEX tasks_by_user ON tasks (user_iss, user_sub, seq);
CREATE INDEX tasks_by_agent ON tasks (agent_iss, agent_sub, seq);

CREATE TABLE credentials (
    jti        text PRIMARY KEY,
    seq        bigserial NOT NULL UNIQUE,
    task_id    text NOT NULL REFERENCES tasks (id),
    kind       text NOT NULL,
    agent_iss  text NOT NULL,
    agent_sub  text NOT NULL,
    user_iss   text NOT NULL,
    user_sub   text NOT NULL,
    scopes     text[] NOT NULL,
    audience   text NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX credentials_by_task ON credentials (task_id);

-- The audit log is append-only and hash-chained. seq is assigned under the
-- lock of the single audit_head row, so seq order is commit order.
CREATE TABLE audit_events (
    seq        bigint PRIMARY KEY,
    time       timestamptz NOT NULL,
    type       text NOT NULL,
    actor_kind text NOT NULL,
    actor_iss  text NOT NULL DEFAULT '',
    actor_sub  text NOT NULL DEFAULT '',
    task_id    text NOT NULL DEFAULT '',
    detail     json NOT NULL,
    hash       text NOT NULL
);
CREATE INDEX audit_events_by_task ON audit_events (task_id, seq);
CREATE INDEX audit_events_by_time ON audit_events (time);

CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- Signing keys, private halves sealed with a key derived from system_secret.
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    alg         text NOT NULL,
    private_key bytea NOT NULL,
    public_jwk  text NOT NULL,
    state       text NOT NULL CHECK (state IN ('current', 'previous', 'retired')),
    created_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
