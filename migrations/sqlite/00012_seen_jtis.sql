-- +goose Up
-- Kept in step with PostgreSQL: the replay cache of accepted JWT
-- identifiers (client assertions, DPoP proofs), as SHA-256 digests per
-- kind, kept until the JWT they came from expires.
CREATE TABLE seen_jtis (
    kind       TEXT NOT NULL,
    jti_sha256 BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, jti_sha256)
);
CREATE INDEX seen_jtis_expiry ON seen_jtis (expires_at);
