-- +goose Up
-- The replay cache shared by replicas: every JWT identifier Errand has
-- accepted where reuse must be refused (RFC 7523 §3 client assertions,
-- RFC 9449 §11.1 DPoP proofs), kept until the JWT it came from expires.
-- Identifiers are stored as SHA-256 digests, qualified by what they were
-- (kind) so that one kind's identifiers never collide with another's.
CREATE TABLE seen_jtis (
    kind       text NOT NULL,
    jti_sha256 bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (kind, jti_sha256)
);
CREATE INDEX seen_jtis_expiry ON seen_jtis (expires_at);
