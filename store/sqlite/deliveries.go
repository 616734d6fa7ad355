package sqlite

import (
	"context"
	"time"

	"github.com/errandhq/errand/broker"
)

// EnqueueDeliveries queues notifications in the transaction of their change.
func (t *txn) EnqueueDeliveries(ctx context.Context, ds []broker.Delivery) error {
	for _, d := range ds {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (msg_id, webhook, event_type, task_id, notice,
			created_at, next_attempt_at) VALUES ($1,$2,$3,$4,$5,$6,$7)`, d.MsgID, d.Webhook, d.Type, d.TaskID,
			string(d.Notice), micros(d.CreatedAt), micros(d.NextAttemptAt)); err != nil {
			return translate(err)
		}
	}
	return nil
}

// FailDelivery gives a delivery up, once.
func (t *txn) FailDelivery(ctx context.Context, d broker.Delivery, at time.Time, errMsg string) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `UPDATE webhook_deliveries SET failed_at = $3, last_error = $4
		WHERE msg_id = $1 AND webhook = $2 AND done_at IS NULL AND failed_at IS NULL`, d.MsgID, d.Webhook, micros(at), errMsg)
	if err != nil {
		return false, translate(err)
	}
	n, err := res.RowsAffected()
	return n == 1, translate(err)
}

func scanDelivery(r scanner) (broker.Delivery, error) {
	var (
		d             broker.Delivery
		notice        string
		created, next int64
	)
	err := r.Scan(&d.MsgID, &d.Webhook, &d.Type, &d.TaskID, &notice, &created, &d.Attempts, &next, &d.LastError)
	d.Notice, d.CreatedAt, d.NextAttemptAt = []byte(notice), fromMicros(created), fromMicros(next)
	return d, translate(err)
}

// ClaimDeliveries leases due deliveries of one webhook.
func (s *Store) ClaimDeliveries(ctx context.Context, webhook string, now time.Time, lease time.Duration, limit int) ([]broker.Delivery, error) {
	return query(ctx, s.db, `UPDATE webhook_deliveries SET next_attempt_at = $3, attempts = attempts + 1
		WHERE (msg_id, webhook) IN (SELECT msg_id, webhook FROM webhook_deliveries
			WHERE webhook = $1 AND done_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $2
			ORDER BY next_attempt_at, created_at LIMIT $4)
		RETURNING msg_id, webhook, event_type, task_id, notice, created_at, attempts, next_attempt_at, last_error`,
		[]any{webhook, micros(now), micros(now.Add(lease)), limit}, scanDelivery)
}

// CompleteDelivery marks a delivery done.
func (s *Store) CompleteDelivery(ctx context.Context, d broker.Delivery, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET done_at = $3, last_error = ''
		WHERE msg_id = $1 AND webhook = $2 AND attempts = $4 AND done_at IS NULL AND failed_at IS NULL`,
		d.MsgID, d.Webhook, micros(at), d.Attempts)
	return translate(err)
}

// RetryDelivery records a failed attempt.
func (s *Store) RetryDelivery(ctx context.Context, d broker.Delivery, next time.Time, errMsg string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET next_attempt_at = $3, last_error = $4
		WHERE msg_id = $1 AND webhook = $2 AND attempts = $5 AND done_at IS NULL AND failed_at IS NULL`,
		d.MsgID, d.Webhook, micros(next), errMsg, d.Attempts)
	return translate(err)
}

// PruneDeliveries deletes finished deliveries.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time, limit int) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE (msg_id, webhook) IN (
		SELECT msg_id, webhook FROM webhook_deliveries
		WHERE coalesce(done_at, failed_at) < $1 LIMIT $2)`, micros(before), limit)
	if err != nil {
		return 0, translate(err)
	}
	n, err := res.RowsAffected()
	return int(n), translate(err)
}
