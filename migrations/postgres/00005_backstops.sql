-- +goose Up
-- Database backstops of the invariants, whoever writes: an approved task's
-- scopes, audiences and expiry never widen; terminal states never change;
-- a revoked credential is never un-revoked and a credential's grant never
-- changes.
-- +goose StatementBegin
CREATE FUNCTION tasks_never_widen() RETURNS trigger AS $$
BEGIN
    IF NEW.expires_at > OLD.expires_at THEN
        RAISE EXCEPTION 'task % expiry may not grow', OLD.id;
    END IF;
    IF OLD.status <> 'pending' AND (NEW.approved_scopes <> OLD.approved_scopes
        OR NEW.approved_audiences <> OLD.approved_audiences) THEN
        RAISE EXCEPTION 'task % approval may not change', OLD.id;
    END IF;
    IF OLD.status IN ('denied', 'closed', 'expired', 'revoked') AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'task % is % for good', OLD.id, OLD.status;
    END IF;
    IF NEW.agent_iss <> OLD.agent_iss OR NEW.agent_sub <> OLD.agent_sub OR NEW.user_iss <> OLD.user_iss
        OR NEW.user_sub <> OLD.user_sub OR NEW.scopes <> OLD.scopes OR NEW.audiences <> OLD.audiences THEN
        RAISE EXCEPTION 'task % request may not change', OLD.id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER tasks_never_widen BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_never_widen();

-- +goose StatementBegin
CREATE FUNCTION credentials_only_revoke() RETURNS trigger AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS NULL OR NEW.revoked_at <> OLD.revoked_at) THEN
        RAISE EXCEPTION 'credential % was revoked for good', OLD.jti;
    END IF;
    IF NEW.jti <> OLD.jti OR NEW.task_id <> OLD.task_id OR NEW.scopes <> OLD.scopes OR NEW.audience <> OLD.audience
        OR NEW.expires_at <> OLD.expires_at OR NEW.kind <> OLD.kind THEN
        RAISE EXCEPTION 'credential % may only be revoked', OLD.jti;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER credentials_only_revoke BEFORE UPDATE ON credentials FOR EACH ROW EXECUTE FUNCTION credentials_only_revoke();
