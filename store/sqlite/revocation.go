package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/errandhq/errand/broker"
)

var _ broker.Outbox = (*Store)(nil)

// LockDue reads due tasks; the IMMEDIATE transaction holds the only write
// lock, so no other writer can be sweeping them at the same time.
func (t *txn) LockDue(ctx context.Context, now time.Time, limit int) ([]broker.Task, error) {
	return query(ctx, t.tx, `SELECT `+taskColumns+` FROM tasks
		WHERE status IN ('pending', 'approved') AND expires_at <= $1 ORDER BY expires_at LIMIT $2`,
		[]any{micros(now), limit}, scanTask)
}

func (t *txn) LockOpenTasks(ctx context.Context, agent broker.Ref) ([]broker.Task, error) {
	return query(ctx, t.tx, `SELECT `+taskColumns+` FROM tasks
		WHERE agent_iss = $1 AND agent_sub = $2 AND status IN ('pending', 'approved') ORDER BY seq`,
		[]any{agent.Issuer, agent.Subject}, scanTask)
}

func (t *txn) RevokeCredential(ctx context.Context, jti string, at time.Time) (broker.Credential, error) {
	return scanCredential(t.tx.QueryRowContext(ctx, `UPDATE credentials SET revoked_at = $2
		WHERE jti = $1 AND revoked_at IS NULL RETURNING `+credentialColumns, jti, micros(at)))
}

func (t *txn) InsertRevocations(ctx context.Context, rs []broker.Revocation) error {
	for _, r := range rs {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO revocations (audit_seq, jti, task_id, revoked_at, reason)
			VALUES ($1,$2,$3,$4,$5)`, r.Seq, r.JTI, r.TaskID, micros(r.RevokedAt), r.Reason); err != nil {
			return translate(err)
		}
	}
	return nil
}

func (t *txn) Enqueue(ctx context.Context, items []broker.OutboxItem) error {
	for _, it := range items {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO outbox (task_id, kind, ref, created_at, next_attempt_at)
			VALUES ($1,$2,$3,$4,$5)`, it.TaskID, it.Kind, it.Ref, micros(it.CreatedAt), micros(it.NextAttemptAt)); err != nil {
			return translate(err)
		}
	}
	return nil
}

func (t *txn) SetSuspended(ctx context.Context, a broker.Ref, reason, by string, at time.Time) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO suspended_agents (agent_iss, agent_sub, reason, suspended_by, suspended_at)
		VALUES ($1,$2,$3,$4,$5) ON CONFLICT (agent_iss, agent_sub)
		DO UPDATE SET reason = $3, suspended_by = $4, suspended_at = $5`, a.Issuer, a.Subject, reason, by, micros(at))
	return translate(err)
}

func (t *txn) ClearSuspended(ctx context.Context, a broker.Ref) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `DELETE FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2`, a.Issuer, a.Subject)
	if err != nil {
		return false, translate(err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (t *txn) MarkAlarmed(ctx context.Context, id int64, at time.Time) error {
	_, err := t.tx.ExecContext(ctx, `UPDATE outbox SET alarmed_at = $2 WHERE id = $1`, id, micros(at))
	return translate(err)
}

// Revocations lists the feed after a position.
func (s *Store) Revocations(ctx context.Context, afterSeq int64, limit int) ([]broker.Revocation, error) {
	return query(ctx, s.db, `SELECT r.audit_seq, r.jti, r.task_id, r.revoked_at, r.reason, coalesce(c.audience, '')
		FROM revocations r LEFT JOIN credentials c ON c.jti = r.jti
		WHERE r.audit_seq > $1 ORDER BY r.audit_seq LIMIT $2`, []any{afterSeq, limit},
		func(r scanner) (broker.Revocation, error) {
			var (
				v  broker.Revocation
				at int64
			)
			err := r.Scan(&v.Seq, &v.JTI, &v.TaskID, &at, &v.Reason, &v.Audience)
			v.RevokedAt = fromMicros(at)
			return v, translate(err)
		})
}

// Suspended reports whether the agent is suspended.
func (s *Store) Suspended(ctx context.Context, a broker.Ref) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2`,
		a.Issuer, a.Subject).Scan(&n)
	return n > 0, translate(err)
}

func scanOutbox(r scanner) (broker.OutboxItem, error) {
	var (
		it            broker.OutboxItem
		created, next int64
		alarmed       sql.NullInt64
	)
	err := r.Scan(&it.ID, &it.TaskID, &it.Kind, &it.Ref, &created, &it.Attempts, &next, &it.LastError, &alarmed)
	it.CreatedAt, it.NextAttemptAt, it.AlarmedAt = fromMicros(created), fromMicros(next), fromNull(alarmed)
	return it, translate(err)
}

// ClaimOutbox leases due items.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]broker.OutboxItem, error) {
	return query(ctx, s.db, `UPDATE outbox SET next_attempt_at = $2, attempts = attempts + 1
		WHERE id IN (SELECT id FROM outbox WHERE done_at IS NULL AND next_attempt_at <= $1
		             ORDER BY next_attempt_at LIMIT $3)
		RETURNING id, task_id, kind, ref, created_at, attempts, next_attempt_at, last_error, alarmed_at`,
		[]any{micros(now), micros(now.Add(lease)), limit}, scanOutbox)
}

// CompleteOutbox marks an item done and clears its task's revoking flag
// once nothing of the task is outstanding.
func (s *Store) CompleteOutbox(ctx context.Context, id int64, at time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return translate(err)
	}
	defer tx.Rollback()
	var task string
	if err := tx.QueryRowContext(ctx, `UPDATE outbox SET done_at = $2 WHERE id = $1 RETURNING task_id`, id, micros(at)).Scan(&task); err != nil {
		return translate(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE tasks SET revoking = 0, version = version + 1 WHERE id = $1 AND revoking
		AND NOT EXISTS (SELECT 1 FROM outbox WHERE task_id = $1 AND done_at IS NULL)`, task); err != nil {
		return translate(err)
	}
	return translate(tx.Commit())
}

// RetryOutbox records a failed attempt.
func (s *Store) RetryOutbox(ctx context.Context, id int64, attempts int, next time.Time, errMsg string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE outbox SET next_attempt_at = $2, last_error = $3
		WHERE id = $1 AND attempts = $4 AND done_at IS NULL`, id, micros(next), errMsg, attempts)
	return translate(err)
}

var _ broker.SecretTx = (*txn)(nil)

func (t *txn) TaskToken(ctx context.Context, taskID string) (broker.TaskToken, error) {
	var (
		tok broker.TaskToken
		exp int64
	)
	err := t.tx.QueryRowContext(ctx, `SELECT accessor, sealed, expires_at FROM vault_tokens WHERE task_id = $1`, taskID).
		Scan(&tok.Accessor, &tok.Sealed, &exp)
	tok.ExpiresAt = fromMicros(exp)
	return tok, translate(err)
}

func (t *txn) InsertTaskToken(ctx context.Context, taskID string, tok broker.TaskToken) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO vault_tokens (task_id, accessor, sealed, expires_at) VALUES ($1,$2,$3,$4)
		ON CONFLICT (task_id) DO UPDATE SET accessor = $2, sealed = $3, expires_at = $4`, taskID, tok.Accessor, tok.Sealed, micros(tok.ExpiresAt))
	return translate(err)
}

func (t *txn) IsSuspended(ctx context.Context, a broker.Ref) (bool, error) {
	var n int
	err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2`,
		a.Issuer, a.Subject).Scan(&n)
	return n > 0, translate(err)
}

// LockAgent reads the agent's standing; the IMMEDIATE transaction already
// holds the only write lock, which serialises every writer.
func (t *txn) LockAgent(ctx context.Context, a broker.Ref, now time.Time, limit int) (bool, int, error) {
	var suspended, pending int
	err := t.tx.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2),
		(SELECT count(*) FROM (SELECT 1 FROM tasks WHERE agent_iss = $1 AND agent_sub = $2
			AND status = 'pending' AND expires_at > $3 LIMIT $4))`,
		a.Issuer, a.Subject, micros(now), limit).Scan(&suspended, &pending)
	return suspended > 0, pending, translate(err)
}
