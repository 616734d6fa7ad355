package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/errandhq/errand/broker"
)

// Backchannel (CIBA) requests (broker.BackchannelTx), migration 00014.
// Every write transaction holds SQLite's write lock, so a read inside one
// is as good as PostgreSQL's FOR UPDATE.

var _ broker.BackchannelTx = (*txn)(nil)

func (t *txn) InsertBackchannel(ctx context.Context, r broker.BackchannelRequest) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO backchannel_requests (id_sha256, task_id, agent_iss, agent_sub,
		binding_message, interval_seconds, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		r.IDHash, r.TaskID, r.Agent.Issuer, r.Agent.Subject, r.BindingMessage,
		int(r.Interval/time.Second), micros(r.CreatedAt), micros(r.ExpiresAt))
	return translate(err)
}

func (t *txn) LockBackchannel(ctx context.Context, idHash string) (broker.BackchannelRequest, error) {
	var (
		r                broker.BackchannelRequest
		interval         int
		created, expires int64
		polled, redeemd  sql.NullInt64
	)
	err := t.tx.QueryRowContext(ctx, `SELECT id_sha256, task_id, agent_iss, agent_sub, binding_message,
		interval_seconds, created_at, expires_at, last_poll_at, redeemed_at
		FROM backchannel_requests WHERE id_sha256 = $1`, idHash).Scan(
		&r.IDHash, &r.TaskID, &r.Agent.Issuer, &r.Agent.Subject, &r.BindingMessage,
		&interval, &created, &expires, &polled, &redeemd)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return r, broker.Errorf(broker.ErrNotFound, "no such backchannel request")
		}
		return r, translate(err)
	}
	r.Interval = time.Duration(interval) * time.Second
	r.CreatedAt, r.ExpiresAt = fromMicros(created), fromMicros(expires)
	if polled.Valid {
		r.LastPollAt = fromMicros(polled.Int64)
	}
	if redeemd.Valid {
		r.RedeemedAt = fromMicros(redeemd.Int64)
	}
	return r, nil
}

func (t *txn) UpdateBackchannel(ctx context.Context, r broker.BackchannelRequest) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE backchannel_requests SET interval_seconds = $2, last_poll_at = $3, redeemed_at = $4
		WHERE id_sha256 = $1`, r.IDHash, int(r.Interval/time.Second), nullMicros(r.LastPollAt), nullMicros(r.RedeemedAt))
	if err != nil {
		return translate(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return broker.Errorf(broker.ErrNotFound, "no such backchannel request")
	}
	return nil
}
