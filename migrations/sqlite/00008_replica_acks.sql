-- +goose Up
-- Kept in step with PostgreSQL; a single SQLite node has no other replica
-- to wait for and does not use it.
CREATE TABLE replica_acks (
    replica  TEXT PRIMARY KEY,
    seen_seq INTEGER NOT NULL,
    beat_at  INTEGER NOT NULL
);
