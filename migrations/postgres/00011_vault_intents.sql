-- +goose Up
-- Intents of per-task Vault tokens, committed before Vault is asked for
-- the token (intent before side effect). The token carries the intent's id
-- in its metadata; a crash between the Vault call and the commit that
-- records the token leaves the intent pending, and the reconciler finds
-- the token in Vault and revokes it. An intent leaves pending once and
-- never changes again; none is ever deleted.
CREATE TABLE vault_intents (
    id          text PRIMARY KEY,
    task_id     text NOT NULL REFERENCES tasks (id),
    state       text NOT NULL CHECK (state IN ('pending', 'recorded', 'abandoned', 'orphaned')),
    accessor    text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    resolved_at timestamptz
);
CREATE INDEX vault_intents_pending ON vault_intents (created_at) WHERE state = 'pending';

-- +goose StatementBegin
CREATE FUNCTION vault_intents_resolve_once() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'vault intent % is kept', OLD.id;
    END IF;
    IF OLD.state <> 'pending' OR NEW.id <> OLD.id OR NEW.task_id <> OLD.task_id OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'vault intent % was resolved for good', OLD.id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER vault_intents_resolve_once BEFORE UPDATE OR DELETE ON vault_intents
    FOR EACH ROW EXECUTE FUNCTION vault_intents_resolve_once();
