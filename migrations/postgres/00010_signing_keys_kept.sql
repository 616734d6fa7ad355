-- +goose Up
-- A signing key is never deleted, only retired. Its row could otherwise
-- be deleted and inserted again with the same sealed private key beside
-- another public key (H02): Errand refuses such a row when it loads the
-- keys, and this takes the move away from whoever is not the table's
-- owner. Retiring (errand keys retire) is how a key leaves the JWKS.
-- +goose StatementBegin
CREATE FUNCTION signing_keys_kept() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'signing keys are never deleted: retire the key instead (errand keys retire)';
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys FOR EACH ROW EXECUTE FUNCTION signing_keys_kept();
CREATE TRIGGER signing_keys_no_truncate BEFORE TRUNCATE ON signing_keys FOR EACH STATEMENT EXECUTE FUNCTION signing_keys_kept();
