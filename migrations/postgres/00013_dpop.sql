-- +goose Up
-- DPoP (RFC 9449): the thumbprint of the key a credential is bound to
-- ('' for a bearer token), which introspection answers from, and whether a
-- task requires bound tokens. Neither changes once written: a bound
-- credential never becomes a bearer one, and a task's requirement is
-- fixed at creation.
ALTER TABLE credentials ADD COLUMN jkt text NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN require_dpop boolean NOT NULL DEFAULT false;

-- One function per table: PL/pgSQL resolves NEW.jkt even where a test of
-- TG_TABLE_NAME would skip it, and a tasks row has no jkt.
-- +goose StatementBegin
CREATE FUNCTION credentials_jkt_fixed() RETURNS trigger AS $$
BEGIN
    IF NEW.jkt <> OLD.jkt THEN
        RAISE EXCEPTION 'credential % binding may not change', OLD.jti;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE FUNCTION tasks_require_dpop_fixed() RETURNS trigger AS $$
BEGIN
    IF NEW.require_dpop <> OLD.require_dpop THEN
        RAISE EXCEPTION 'task % DPoP requirement may not change', OLD.id;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER credentials_jkt_fixed BEFORE UPDATE OF jkt ON credentials FOR EACH ROW EXECUTE FUNCTION credentials_jkt_fixed();
CREATE TRIGGER tasks_require_dpop_fixed BEFORE UPDATE OF require_dpop ON tasks FOR EACH ROW EXECUTE FUNCTION tasks_require_dpop_fixed();
