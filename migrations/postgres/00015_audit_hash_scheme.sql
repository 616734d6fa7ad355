-- +goose Up
-- The audit chain's hash scheme, per event: 1 is the encoding/json form
-- every event before this migration was hashed with (the default fills it
-- in for them, without rewriting a row, so the append-only triggers are
-- not involved); 2 is RFC 8785 JCS, which Errand writes from now on,
-- always naming it. No CHECK constraint: it would scan the whole log under
-- the migration's lock, and errand audit verify refuses an unknown scheme.
ALTER TABLE audit_events ADD COLUMN hash_scheme smallint NOT NULL DEFAULT 1;
