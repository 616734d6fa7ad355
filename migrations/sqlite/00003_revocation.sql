-- +goose Up
-- The revocation engine: expiry sweeping, the feed for resource servers,
-- the outbox of backend revocations, and the agent kill switch.
ALTER TABLE tasks ADD COLUMN revoking INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_due ON tasks (expires_at) WHERE status IN ('pending', 'approved');
CREATE INDEX tasks_open_by_agent ON tasks (agent_iss, agent_sub) WHERE status IN ('pending', 'approved');

CREATE TABLE revocations (
    audit_seq  INTEGER PRIMARY KEY,
    jti        TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    ref             TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    alarmed_at      INTEGER,
    done_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE done_at IS NULL;
CREATE INDEX outbox_by_task ON outbox (task_id) WHERE done_at IS NULL;

CREATE TABLE suspended_agents (
    agent_iss    TEXT NOT NULL,
    agent_sub    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    suspended_by TEXT NOT NULL,
    suspended_at INTEGER NOT NULL,
    PRIMARY KEY (agent_iss, agent_sub)
);
