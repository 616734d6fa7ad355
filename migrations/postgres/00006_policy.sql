-- +goose Up
-- Policy-as-code: the approving user's groups (given to policies at every
-- later decision), per-task budgets, and step-up approvals.
ALTER TABLE tasks ADD COLUMN user_groups text[] NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN max_credentials integer NOT NULL DEFAULT 0 CHECK (max_credentials >= 0);
ALTER TABLE tasks ADD COLUMN max_resources integer NOT NULL DEFAULT 0 CHECK (max_resources >= 0);
ALTER TABLE credentials ADD COLUMN step_up_id text;

CREATE TABLE step_ups (
    id           text PRIMARY KEY,
    seq          bigserial NOT NULL UNIQUE,
    task_id      text NOT NULL REFERENCES tasks (id),
    agent_iss    text NOT NULL,
    agent_sub    text NOT NULL,
    user_iss     text NOT NULL,
    user_sub     text NOT NULL,
    scopes       text[] NOT NULL,
    audience     text NOT NULL,
    tool         text NOT NULL DEFAULT '',
    dataset      text NOT NULL DEFAULT '',
    request_hash text NOT NULL,
    policies     text[] NOT NULL,
    reasons      text[] NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    deny_reason  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    decided_at   timestamptz,
    used_at      timestamptz
);
CREATE INDEX step_ups_by_request ON step_ups (task_id, request_hash, seq);
CREATE INDEX step_ups_by_user ON step_ups (user_iss, user_sub, seq);
CREATE INDEX step_ups_by_agent ON step_ups (agent_iss, agent_sub, seq);
-- A step-up approval is used by one credential at most.
CREATE UNIQUE INDEX credentials_one_per_step_up ON credentials (step_up_id) WHERE step_up_id IS NOT NULL;

-- Backstops, whoever writes: a budget never changes; the groups a task was
-- approved with never change; a step-up only moves pending → approved |
-- denied, approved → used, and never changes the request it approves; a
-- credential's step-up is fixed.
-- +goose StatementBegin
CREATE FUNCTION tasks_policy_fixed() RETURNS trigger AS $$
BEGIN
    IF NEW.max_credentials <> OLD.max_credentials OR NEW.max_resources <> OLD.max_resources THEN
        RAISE EXCEPTION 'task % budget may not change', OLD.id;
    END IF;
    IF OLD.status <> 'pending' AND NEW.user_groups <> OLD.user_groups THEN
        RAISE EXCEPTION 'task % approval may not change', OLD.id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER tasks_policy_fixed BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_policy_fixed();

-- +goose StatementBegin
CREATE FUNCTION step_ups_one_way() RETURNS trigger AS $$
BEGIN
    IF NOT ((OLD.status = NEW.status AND OLD.status = 'pending')
        OR (OLD.status = 'pending' AND NEW.status IN ('approved', 'denied'))
        OR (OLD.status = 'approved' AND NEW.status = 'used')) THEN
        RAISE EXCEPTION 'step-up % may not go from % to %', OLD.id, OLD.status, NEW.status;
    END IF;
    -- Only an approval sets how long it stays usable; nothing is used late.
    IF NEW.expires_at <> OLD.expires_at AND NOT (OLD.status = 'pending' AND NEW.status = 'approved') THEN
        RAISE EXCEPTION 'step-up % expiry may not change', OLD.id;
    END IF;
    IF NEW.status = 'used' AND (NEW.used_at IS NULL OR NEW.used_at >= OLD.expires_at) THEN
        RAISE EXCEPTION 'step-up % is expired', OLD.id;
    END IF;
    IF NEW.task_id <> OLD.task_id OR NEW.request_hash <> OLD.request_hash OR NEW.scopes <> OLD.scopes
        OR NEW.audience <> OLD.audience OR NEW.tool <> OLD.tool OR NEW.dataset <> OLD.dataset
        OR NEW.user_iss <> OLD.user_iss OR NEW.user_sub <> OLD.user_sub THEN
        RAISE EXCEPTION 'step-up % request may not change', OLD.id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER step_ups_one_way BEFORE UPDATE ON step_ups FOR EACH ROW EXECUTE FUNCTION step_ups_one_way();

-- +goose StatementBegin
CREATE FUNCTION credentials_step_up_fixed() RETURNS trigger AS $$
BEGIN
    IF NEW.step_up_id IS DISTINCT FROM OLD.step_up_id THEN
        RAISE EXCEPTION 'credential % step-up may not change', OLD.jti;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER credentials_step_up_fixed BEFORE UPDATE ON credentials FOR EACH ROW EXECUTE FUNCTION credentials_step_up_fixed();
