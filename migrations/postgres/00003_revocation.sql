-- +goose Up
-- The revocation engine: expiry sweeping, the feed for resource servers,
-- the outbox of backend revocations, and the agent kill switch.
ALTER TABLE tasks ADD COLUMN revoking boolean NOT NULL DEFAULT false;
CREATE INDEX tasks_due ON tasks (expires_at) WHERE status IN ('pending', 'approved');
CREATE INDEX tasks_open_by_agent ON tasks (agent_iss, agent_sub) WHERE status IN ('pending', 'approved');

-- One row per revoked credential, keyed by the seq of its credential.revoked
-- audit event: seq order is commit order, so a reader that pages by it
-- never skips a row committed late.
CREATE TABLE revocations (
    audit_seq  bigint PRIMARY KEY,
    jti        text NOT NULL,
    task_id    text NOT NULL,
    revoked_at timestamptz NOT NULL,
    reason     text NOT NULL
);

-- Backend revocations (Vault leases, …) to carry out until confirmed.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    task_id         text NOT NULL,
    kind            text NOT NULL,
    ref             text NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text NOT NULL DEFAULT '',
    alarmed_at      timestamptz,
    done_at         timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE done_at IS NULL;
CREATE INDEX outbox_by_task ON outbox (task_id) WHERE done_at IS NULL;

CREATE TABLE suspended_agents (
    agent_iss    text NOT NULL,
    agent_sub    text NOT NULL,
    reason       text NOT NULL,
    suspended_by text NOT NULL,
    suspended_at timestamptz NOT NULL,
    PRIMARY KEY (agent_iss, agent_sub)
);
