-- +goose Up
-- Policy-as-code (see the PostgreSQL migration): user groups, budgets and
-- step-up approvals, with the same backstops.
ALTER TABLE tasks ADD COLUMN user_groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN max_credentials INTEGER NOT NULL DEFAULT 0 CHECK (max_credentials >= 0);
ALTER TABLE tasks ADD COLUMN max_resources INTEGER NOT NULL DEFAULT 0 CHECK (max_resources >= 0);
ALTER TABLE credentials ADD COLUMN step_up_id TEXT;

CREATE TABLE step_ups (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    task_id      TEXT NOT NULL REFERENCES tasks (id),
    agent_iss    TEXT NOT NULL,
    agent_sub    TEXT NOT NULL,
    user_iss     TEXT NOT NULL,
    user_sub     TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    audience     TEXT NOT NULL,
    tool         TEXT NOT NULL DEFAULT '',
    dataset      TEXT NOT NULL DEFAULT '',
    request_hash TEXT NOT NULL,
    policies     TEXT NOT NULL,
    reasons      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    deny_reason  TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    decided_at   INTEGER,
    used_at      INTEGER
);
CREATE INDEX step_ups_by_request ON step_ups (task_id, request_hash, seq);
CREATE INDEX step_ups_by_user ON step_ups (user_iss, user_sub, seq);
CREATE INDEX step_ups_by_agent ON step_ups (agent_iss, agent_sub, seq);
CREATE UNIQUE INDEX credentials_one_per_step_up ON credentials (step_up_id) WHERE step_up_id IS NOT NULL;

-- +goose StatementBegin
CREATE TRIGGER tasks_policy_fixed BEFORE UPDATE ON tasks
WHEN NEW.max_credentials <> OLD.max_credentials OR NEW.max_resources <> OLD.max_resources
  OR (OLD.status <> 'pending' AND NEW.user_groups <> OLD.user_groups)
BEGIN
    SELECT RAISE(ABORT, 'a task''s budget and approval may not change');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER step_ups_one_way BEFORE UPDATE ON step_ups
WHEN NOT ((OLD.status = NEW.status AND OLD.status = 'pending')
    OR (OLD.status = 'pending' AND NEW.status IN ('approved', 'denied'))
    OR (OLD.status = 'approved' AND NEW.status = 'used'))
  OR NEW.task_id <> OLD.task_id OR NEW.request_hash <> OLD.request_hash OR NEW.scopes <> OLD.scopes
  OR NEW.audience <> OLD.audience OR NEW.tool <> OLD.tool OR NEW.dataset <> OLD.dataset
  OR NEW.user_iss <> OLD.user_iss OR NEW.user_sub <> OLD.user_sub
  OR (NEW.expires_at <> OLD.expires_at AND NOT (OLD.status = 'pending' AND NEW.status = 'approved'))
  OR (NEW.status = 'used' AND (NEW.used_at IS NULL OR NEW.used_at >= OLD.expires_at))
BEGIN
    SELECT RAISE(ABORT, 'a step-up only moves forward and never changes its request');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER credentials_step_up_fixed BEFORE UPDATE ON credentials
WHEN NEW.step_up_id IS NOT OLD.step_up_id
BEGIN
    SELECT RAISE(ABORT, 'a credential''s step-up may not change');
END;
-- +goose StatementEnd
