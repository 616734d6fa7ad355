-- +goose Up
-- Kept in step with PostgreSQL: notifications, one row per (event,
-- webhook), written in the transaction of the change it reports.
CREATE TABLE webhook_deliveries (
    msg_id          TEXT NOT NULL,
    webhook         TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    notice          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    done_at         INTEGER,
    failed_at       INTEGER,
    PRIMARY KEY (msg_id, webhook)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook, next_attempt_at)
    WHERE done_at IS NULL AND failed_at IS NULL;
