-- +goose Up
-- Notifications: one row per (event, webhook), written in the transaction
-- of the change it reports, so that a crash loses none. msg_id is the
-- Standard Webhooks webhook-id, the same on every attempt; webhook names
-- the configured endpoint by a digest of its URL (a Slack URL is itself a
-- secret, so the URL is never stored). notice is the event as Errand
-- recorded it; the body is made from it at each attempt, byte for byte the
-- same. A delivery is done once a receiver answered 2xx, or failed once
-- given up (and audited as notification.failed).
CREATE TABLE webhook_deliveries (
    msg_id          text NOT NULL,
    webhook         text NOT NULL,
    event_type      text NOT NULL,
    task_id         text NOT NULL,
    notice          text NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text NOT NULL DEFAULT '',
    done_at         timestamptz,
    failed_at       timestamptz,
    PRIMARY KEY (msg_id, webhook)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook, next_attempt_at)
    WHERE done_at IS NULL AND failed_at IS NULL;
