-- +goose Up
-- Kept in step with PostgreSQL: the audit chain's hash scheme, per event
-- (1 for the events written before, the encoding/json form; Errand writes
-- 2, RFC 8785 JCS, from now on). Adding a column with a constant default
-- rewrites no row, so the append-only triggers are not involved.
ALTER TABLE audit_events ADD COLUMN hash_scheme INTEGER NOT NULL DEFAULT 1;
