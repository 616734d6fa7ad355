package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
)

// Backchannel (CIBA) requests (broker.BackchannelTx), migration 00014.

var _ broker.BackchannelTx = (*txn)(nil)

func (t *txn) InsertBackchannel(ctx context.Context, r broker.BackchannelRequest) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO backchannel_requests (id_sha256, task_id, agent_iss, agent_sub,
		binding_message, interval_seconds, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		r.IDHash, r.TaskID, r.Agent.Issuer, r.Agent.Subject, r.BindingMessage,
		int(r.Interval/time.Second), r.CreatedAt, r.ExpiresAt)
	return translate(err)
}

func (t *txn) LockBackchannel(ctx context.Context, idHash string) (broker.BackchannelRequest, error) {
	var (
		r               broker.BackchannelRequest
		interval        int
		polled, redeemd *time.Time
	)
	err := t.tx.QueryRow(ctx, `SELECT id_sha256, task_id, agent_iss, agent_sub, binding_message,
		interval_seconds, created_at, expires_at, last_poll_at, redeemed_at
		FROM backchannel_requests WHERE id_sha256 = $1 FOR UPDATE`, idHash).Scan(
		&r.IDHash, &r.TaskID, &r.Agent.Issuer, &r.Agent.Subject, &r.BindingMessage,
		&interval, &r.CreatedAt, &r.ExpiresAt, &polled, &redeemd)
	if err != nil {
		if err == pgx.ErrNoRows {
			return r, broker.Errorf(broker.ErrNotFound, "no such backchannel request")
		}
		return r, translate(err)
	}
	r.Interval = time.Duration(interval) * time.Second
	r.CreatedAt, r.ExpiresAt = r.CreatedAt.UTC(), r.ExpiresAt.UTC()
	if polled != nil {
		r.LastPollAt = polled.UTC()
	}
	if redeemd != nil {
		r.RedeemedAt = redeemd.UTC()
	}
	return r, nil
}

func (t *txn) UpdateBackchannel(ctx context.Context, r broker.BackchannelRequest) error {
	tag, err := t.tx.Exec(ctx, `UPDATE backchannel_requests SET interval_seconds = $2, last_poll_at = $3, redeemed_at = $4
		WHERE id_sha256 = $1`, r.IDHash, int(r.Interval/time.Second), nullTime(r.LastPollAt), nullTime(r.RedeemedAt))
	if err != nil {
		return translate(err)
	}
	if tag.RowsAffected() != 1 {
		return broker.Errorf(broker.ErrNotFound, "no such backchannel request")
	}
	return nil
}
