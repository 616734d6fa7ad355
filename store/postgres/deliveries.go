package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
)

var (
	_ broker.Deliveries = (*Store)(nil)
	_ broker.NoticeTx   = (*txn)(nil)
)

// EnqueueDeliveries queues notifications in the transaction of their change.
func (t *txn) EnqueueDeliveries(ctx context.Context, ds []broker.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, d := range ds {
		b.Queue(`INSERT INTO webhook_deliveries (msg_id, webhook, event_type, task_id, notice, created_at, next_attempt_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7)`, d.MsgID, d.Webhook, d.Type, d.TaskID, string(d.Notice), d.CreatedAt, d.NextAttemptAt)
	}
	return translate(t.tx.SendBatch(ctx, b).Close())
}

// FailDelivery gives a delivery up, once.
func (t *txn) FailDelivery(ctx context.Context, d broker.Delivery, at time.Time, errMsg string) (bool, error) {
	tag, err := t.tx.Exec(ctx, `UPDATE webhook_deliveries SET failed_at = $3, last_error = $4
		WHERE msg_id = $1 AND webhook = $2 AND done_at IS NULL AND failed_at IS NULL`, d.MsgID, d.Webhook, at, errMsg)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

const deliveryColumns = `msg_id, webhook, event_type, task_id, notice, created_at, attempts, next_attempt_at, last_error`

func scanDelivery(r pgx.Row) (broker.Delivery, error) {
	var (
		d      broker.Delivery
		notice string
	)
	err := r.Scan(&d.MsgID, &d.Webhook, &d.Type, &d.TaskID, &notice, &d.CreatedAt, &d.Attempts, &d.NextAttemptAt, &d.LastError)
	d.Notice = []byte(notice)
	d.CreatedAt, d.NextAttemptAt = d.CreatedAt.UTC(), d.NextAttemptAt.UTC()
	return d, translate(err)
}

// ClaimDeliveries leases due deliveries of one webhook; rows another
// replica holds are skipped.
func (s *Store) ClaimDeliveries(ctx context.Context, webhook string, now time.Time, lease time.Duration, limit int) ([]broker.Delivery, error) {
	rows, err := s.pool.Query(ctx, `UPDATE webhook_deliveries SET next_attempt_at = $3, attempts = attempts + 1
		WHERE (msg_id, webhook) IN (SELECT msg_id, webhook FROM webhook_deliveries
			WHERE webhook = $1 AND done_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $2
			ORDER BY next_attempt_at, created_at LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING `+deliveryColumns, webhook, now, now.Add(lease), limit)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanDelivery)
}

// CompleteDelivery marks a delivery done.
func (s *Store) CompleteDelivery(ctx context.Context, d broker.Delivery, at time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET done_at = $3, last_error = ''
		WHERE msg_id = $1 AND webhook = $2 AND attempts = $4 AND done_at IS NULL AND failed_at IS NULL`,
		d.MsgID, d.Webhook, at, d.Attempts)
	return translate(err)
}

// RetryDelivery records a failed attempt.
func (s *Store) RetryDelivery(ctx context.Context, d broker.Delivery, next time.Time, errMsg string) error {
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt_at = $3, last_error = $4
		WHERE msg_id = $1 AND webhook = $2 AND attempts = $5 AND done_at IS NULL AND failed_at IS NULL`,
		d.MsgID, d.Webhook, next, errMsg, d.Attempts)
	return translate(err)
}

// PruneDeliveries deletes finished deliveries.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_deliveries WHERE (msg_id, webhook) IN (
		SELECT msg_id, webhook FROM webhook_deliveries
		WHERE coalesce(done_at, failed_at) < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, limit)
	if err != nil {
		return 0, translate(err)
	}
	return int(tag.RowsAffected()), nil
}
