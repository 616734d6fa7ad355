-- +goose Up
-- Database backstops of the invariants (see the PostgreSQL migration).
-- +goose StatementBegin
CREATE TRIGGER tasks_never_widen BEFORE UPDATE ON tasks
WHEN NEW.expires_at > OLD.expires_at
  OR (OLD.status <> 'pending' AND (NEW.approved_scopes <> OLD.approved_scopes OR NEW.approved_audiences <> OLD.approved_audiences))
  OR (OLD.status IN ('denied', 'closed', 'expired', 'revoked') AND NEW.status <> OLD.status)
  OR NEW.agent_iss <> OLD.agent_iss OR NEW.agent_sub <> OLD.agent_sub OR NEW.user_iss <> OLD.user_iss
  OR NEW.user_sub <> OLD.user_sub OR NEW.scopes <> OLD.scopes OR NEW.audiences <> OLD.audiences
BEGIN
    SELECT RAISE(ABORT, 'a task may not widen, leave a terminal state, or change its request');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER credentials_only_revoke BEFORE UPDATE ON credentials
WHEN (OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS NULL OR NEW.revoked_at <> OLD.revoked_at))
  OR NEW.jti <> OLD.jti OR NEW.task_id <> OLD.task_id OR NEW.scopes <> OLD.scopes OR NEW.audience <> OLD.audience
  OR NEW.expires_at <> OLD.expires_at OR NEW.kind <> OLD.kind
BEGIN
    SELECT RAISE(ABORT, 'a credential may only be revoked');
END;
-- +goose StatementEnd
