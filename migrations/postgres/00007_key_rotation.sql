-- +goose Up
-- Signing-key rotation: a key is published as next before it signs, signs
-- as current, keeps verifying as previous for the overlap, then is
-- retired (no longer served nor accepted). States only move forward.
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_state_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_state_check
    CHECK (state IN ('next', 'current', 'previous', 'retired'));
ALTER TABLE signing_keys ADD COLUMN activated_at timestamptz;
ALTER TABLE signing_keys ADD COLUMN deactivated_at timestamptz;
ALTER TABLE signing_keys ADD COLUMN retired_at timestamptz;
UPDATE signing_keys SET activated_at = created_at WHERE state IN ('current', 'previous');
UPDATE signing_keys SET deactivated_at = created_at WHERE state = 'previous';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';

-- +goose StatementBegin
CREATE FUNCTION signing_keys_forward() RETURNS trigger AS $$
BEGIN
    IF NEW.kid <> OLD.kid OR NEW.private_key <> OLD.private_key OR NEW.public_jwk <> OLD.public_jwk OR NEW.alg <> OLD.alg THEN
        RAISE EXCEPTION 'signing key % may not change', OLD.kid;
    END IF;
    IF NOT (NEW.state = OLD.state
        OR (OLD.state = 'next' AND NEW.state IN ('current', 'retired'))
        OR (OLD.state = 'current' AND NEW.state IN ('previous', 'retired'))
        OR (OLD.state = 'previous' AND NEW.state = 'retired')) THEN
        RAISE EXCEPTION 'signing key % may not go from % to %', OLD.kid, OLD.state, NEW.state;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER signing_keys_forward BEFORE UPDATE ON signing_keys FOR EACH ROW EXECUTE FUNCTION signing_keys_forward();
