-- +goose Up
-- Each replica's position in the revocation feed and its heartbeat: a
-- replica that answers introspection from memory records here how far it
-- has applied the feed, and a revocation returns only once every live
-- replica has applied it (invariant 8 across replicas).
CREATE TABLE replica_acks (
    replica  text PRIMARY KEY,
    seen_seq bigint NOT NULL,
    beat_at  timestamptz NOT NULL
);
