package postgres

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
)

// RevocationChannel is the LISTEN/NOTIFY channel told of every revocation.
const RevocationChannel = "errand_revocations"

var _ broker.Outbox = (*Store)(nil)

func (t *txn) LockDue(ctx context.Context, now time.Time, limit int) ([]broker.Task, error) {
	rows, err := t.tx.Query(ctx, `SELECT `+taskColumns+` FROM tasks
		WHERE status IN ('pending', 'approved') AND expires_at <= $1
		ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, limit)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanTask)
}

func (t *txn) LockOpenTasks(ctx context.Context, agent broker.Ref) ([]broker.Task, error) {
	rows, err := t.tx.Query(ctx, `SELECT `+taskColumns+` FROM tasks
		WHERE agent_iss = $1 AND agent_sub = $2 AND status IN ('pending', 'approved')
		ORDER BY seq FOR UPDATE`, agent.Issuer, agent.Subject)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanTask)
}

func (t *txn) RevokeCredential(ctx context.Context, jti string, at time.Time) (broker.Credential, error) {
	return scanCredential(t.tx.QueryRow(ctx, `UPDATE credentials SET revoked_at = $2
		WHERE jti = $1 AND revoked_at IS NULL RETURNING `+credentialColumns, jti, at))
}

func (t *txn) InsertRevocations(ctx context.Context, rs []broker.Revocation) error {
	if len(rs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, r := range rs {
		b.Queue(`INSERT INTO revocations (audit_seq, jti, task_id, revoked_at, reason) VALUES ($1,$2,$3,$4,$5)`,
			r.Seq, r.JTI, r.TaskID, r.RevokedAt, r.Reason)
	}
	// Delivered at commit, to every replica listening.
	b.Queue(`SELECT pg_notify($1, '')`, RevocationChannel)
	return translate(t.tx.SendBatch(ctx, b).Close())
}

func (t *txn) Enqueue(ctx context.Context, items []broker.OutboxItem) error {
	if len(items) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, it := range items {
		b.Queue(`INSERT INTO outbox (task_id, kind, ref, created_at, next_attempt_at) VALUES ($1,$2,$3,$4,$5)`,
			it.TaskID, it.Kind, it.Ref, it.CreatedAt, it.NextAttemptAt)
	}
	return translate(t.tx.SendBatch(ctx, b).Close())
}

func (t *txn) SetSuspended(ctx context.Context, a broker.Ref, reason, by string, at time.Time) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO suspended_agents (agent_iss, agent_sub, reason, suspended_by, suspended_at)
		VALUES ($1,$2,$3,$4,$5) ON CONFLICT (agent_iss, agent_sub)
		DO UPDATE SET reason = $3, suspended_by = $4, suspended_at = $5`, a.Issuer, a.Subject, reason, by, at)
	return translate(err)
}

func (t *txn) ClearSuspended(ctx context.Context, a broker.Ref) (bool, error) {
	tag, err := t.tx.Exec(ctx, `DELETE FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2`, a.Issuer, a.Subject)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

func (t *txn) MarkAlarmed(ctx context.Context, id int64, at time.Time) error {
	_, err := t.tx.Exec(ctx, `UPDATE outbox SET alarmed_at = $2 WHERE id = $1`, id, at)
	return translate(err)
}

// Revocations lists the feed after a position.
func (s *Store) Revocations(ctx context.Context, afterSeq int64, limit int) ([]broker.Revocation, error) {
	rows, err := s.pool.Query(ctx, `SELECT r.audit_seq, r.jti, r.task_id, r.revoked_at, r.reason, coalesce(c.audience, '')
		FROM revocations r LEFT JOIN credentials c ON c.jti = r.jti
		WHERE r.audit_seq > $1 ORDER BY r.audit_seq LIMIT $2`, afterSeq, limit)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, func(r pgx.Row) (broker.Revocation, error) {
		var v broker.Revocation
		err := r.Scan(&v.Seq, &v.JTI, &v.TaskID, &v.RevokedAt, &v.Reason, &v.Audience)
		v.RevokedAt = v.RevokedAt.UTC()
		return v, err
	})
}

// Suspended reports whether the agent is suspended.
func (s *Store) Suspended(ctx context.Context, a broker.Ref) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2)`,
		a.Issuer, a.Subject).Scan(&ok)
	return ok, translate(err)
}

const outboxColumns = `id, task_id, kind, ref, created_at, attempts, next_attempt_at, last_error, alarmed_at`

func scanOutbox(r pgx.Row) (broker.OutboxItem, error) {
	var (
		it      broker.OutboxItem
		alarmed *time.Time
	)
	err := r.Scan(&it.ID, &it.TaskID, &it.Kind, &it.Ref, &it.CreatedAt, &it.Attempts, &it.NextAttemptAt, &it.LastError, &alarmed)
	if alarmed != nil {
		it.AlarmedAt = alarmed.UTC()
	}
	it.CreatedAt, it.NextAttemptAt = it.CreatedAt.UTC(), it.NextAttemptAt.UTC()
	return it, translate(err)
}

// ClaimOutbox leases due items; rows another replica holds are skipped.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]broker.OutboxItem, error) {
	rows, err := s.pool.Query(ctx, `UPDATE outbox SET next_attempt_at = $2, attempts = attempts + 1
		WHERE id IN (SELECT id FROM outbox WHERE done_at IS NULL AND next_attempt_at <= $1
		             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
		RETURNING `+outboxColumns, now, now.Add(lease), limit)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanOutbox)
}

// CompleteOutbox marks an item done and clears its task's revoking flag
// once nothing of the task is outstanding.
func (s *Store) CompleteOutbox(ctx context.Context, id int64, at time.Time) error {
	return translate(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var task string
		if err := tx.QueryRow(ctx, `SELECT task_id FROM outbox WHERE id = $1`, id).Scan(&task); err != nil {
			return err
		}
		// Lock the task first: two replicas completing a task's last two
		// items must not both miss the other's (write skew).
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE`, task); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE outbox SET done_at = $2 WHERE id = $1`, id, at); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE tasks SET revoking = false, version = version + 1 WHERE id = $1 AND revoking
			AND NOT EXISTS (SELECT 1 FROM outbox WHERE task_id = $1 AND done_at IS NULL)`, task)
		return err
	}))
}

// RetryOutbox records a failed attempt.
func (s *Store) RetryOutbox(ctx context.Context, id int64, attempts int, next time.Time, errMsg string) error {
	_, err := s.pool.Exec(ctx, `UPDATE outbox SET next_attempt_at = $2, last_error = $3
		WHERE id = $1 AND attempts = $4 AND done_at IS NULL`, id, next, errMsg, attempts)
	return translate(err)
}

// Listen calls notify whenever a revocation commits on any replica, until
// ctx ends. It reconnects after a failure.
func (s *Store) Listen(ctx context.Context, notify func()) error {
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, notify)
		if ctx.Err() != nil {
			return nil
		}
		_ = err
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		notify() // something may have been missed while disconnected
	}
	return nil
}

func (s *Store) listenOnce(ctx context.Context, notify func()) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+RevocationChannel); err != nil {
		conn.Conn().Close(ctx)
		return err
	}
	defer func() {
		// Never hand a listening connection back to the pool.
		conn.Conn().Close(context.Background())
	}()
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			return err
		}
		notify()
	}
}

var _ broker.SecretTx = (*txn)(nil)

func (t *txn) TaskToken(ctx context.Context, taskID string) (broker.TaskToken, error) {
	var tok broker.TaskToken
	err := t.tx.QueryRow(ctx, `SELECT accessor, sealed, expires_at FROM vault_tokens WHERE task_id = $1`, taskID).
		Scan(&tok.Accessor, &tok.Sealed, &tok.ExpiresAt)
	tok.ExpiresAt = tok.ExpiresAt.UTC()
	return tok, translate(err)
}

func (t *txn) InsertTaskToken(ctx context.Context, taskID string, tok broker.TaskToken) error {
	_, err := t.tx.Exec(ctx, `INSERT INTO vault_tokens (task_id, accessor, sealed, expires_at) VALUES ($1,$2,$3,$4)
		ON CONFLICT (task_id) DO UPDATE SET accessor = $2, sealed = $3, expires_at = $4`, taskID, tok.Accessor, tok.Sealed, tok.ExpiresAt)
	return translate(err)
}

func (t *txn) IsSuspended(ctx context.Context, a broker.Ref) (bool, error) {
	var ok bool
	err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2)`,
		a.Issuer, a.Subject).Scan(&ok)
	return ok, translate(err)
}

// LockAgent takes a transaction-scoped advisory lock named after the agent
// (a hash of its issuer and subject: a collision only serialises two
// agents' creates), then reads its standing under it. The count runs after
// the lock is granted, so under READ COMMITTED it sees every task that the
// lock's previous holder committed.
func (t *txn) LockAgent(ctx context.Context, a broker.Ref, now time.Time, limit int) (bool, int, error) {
	if _, err := t.tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, agentLockKey(a)); err != nil {
		return false, 0, translate(err)
	}
	var (
		suspended bool
		pending   int
	)
	err := t.tx.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM suspended_agents WHERE agent_iss = $1 AND agent_sub = $2),
		(SELECT count(*) FROM (SELECT 1 FROM tasks WHERE agent_iss = $1 AND agent_sub = $2
			AND status = 'pending' AND expires_at > $3 LIMIT $4) p)`,
		a.Issuer, a.Subject, now, limit).Scan(&suspended, &pending)
	return suspended, pending, translate(err)
}

// agentLockKey is the advisory-lock key of an agent: FNV-1a of a tag, its
// issuer and its subject, so that no other lock of Errand's shares it.
func agentLockKey(a broker.Ref) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("errand.agent\x00" + a.Issuer + "\x00" + a.Subject))
	return int64(h.Sum64())
}
