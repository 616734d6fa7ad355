package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/store/internal/sqlq"
)

type txn struct {
	tx    *sql.Tx
	clock func() time.Time
}

// Now is the store's clock.
func (t *txn) Now(context.Context) (time.Time, error) { return t.clock(), nil }

var _ broker.Tx = (*txn)(nil)

const taskColumns = `id, seq, version, status, agent_iss, agent_sub, user_iss, user_sub, goal,
	scopes, approved_scopes, audiences, approved_audiences, risk, tool, dataset, ttl_capped,
	deny_reason, created_at, approved_at, expires_at, closed_at, revoking, user_groups,
	max_credentials, max_resources, require_dpop`

const credentialColumns = `jti, seq, task_id, kind, agent_iss, agent_sub, user_iss, user_sub,
	scopes, audience, issued_at, expires_at, revoked_at, coalesce(idempotency_key, ''), coalesce(request_hash, ''),
	coalesce(step_up_id, ''), jkt`

func (t *txn) InsertTask(ctx context.Context, k *broker.Task) error {
	err := t.tx.QueryRowContext(ctx, `INSERT INTO tasks (id, version, status, agent_iss, agent_sub,
		user_iss, user_sub, goal, scopes, approved_scopes, audiences, approved_audiences, risk,
		tool, dataset, ttl_capped, deny_reason, created_at, approved_at, expires_at, closed_at, revoking,
		user_groups, max_credentials, max_resources, require_dpop)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26)
		RETURNING seq`,
		k.ID, k.Version, string(k.Status), k.Agent.Issuer, k.Agent.Subject, k.User.Issuer,
		k.User.Subject, k.Goal, jsonList(k.Scopes.Strings()), jsonList(k.ApprovedScopes.Strings()),
		jsonList(k.Audiences), jsonList(k.ApprovedAudiences), string(k.Risk), k.Tool, k.Dataset,
		k.TTLCapped, k.DenyReason, micros(k.CreatedAt), nullMicros(k.ApprovedAt), micros(k.ExpiresAt),
		nullMicros(k.ClosedAt), k.Revoking, jsonList(k.UserGroups), k.Budget.MaxCredentials,
		k.Budget.MaxResources, k.RequireDPoP).Scan(&k.Seq)
	return translate(err)
}

// LockTask reads the task; the IMMEDIATE transaction already holds
// SQLite's write lock, which serialises it against every other writer.
func (t *txn) LockTask(ctx context.Context, id string) (broker.Task, error) {
	return scanTask(t.tx.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
}

// LockTaskChecked is LockTask, the agent's suspension and the clock.
func (t *txn) LockTaskChecked(ctx context.Context, id string) (broker.Task, bool, time.Time, error) {
	k, err := t.LockTask(ctx, id)
	if err != nil {
		return broker.Task{}, false, time.Time{}, err
	}
	suspended, err := t.IsSuspended(ctx, k.Agent)
	if err != nil {
		return broker.Task{}, false, time.Time{}, err
	}
	return k, suspended, t.clock(), nil
}

// UpdateTask writes k, one version after the stored one.
func (t *txn) UpdateTask(ctx context.Context, k broker.Task) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE tasks SET version=$2, status=$3, approved_scopes=$4,
		approved_audiences=$5, deny_reason=$6, approved_at=$7, expires_at=$8, closed_at=$9, revoking=$10,
		user_groups=$11 WHERE id=$1 AND version=$2-1`,
		k.ID, k.Version, string(k.Status), jsonList(k.ApprovedScopes.Strings()), jsonList(k.ApprovedAudiences),
		k.DenyReason, nullMicros(k.ApprovedAt), micros(k.ExpiresAt), nullMicros(k.ClosedAt), k.Revoking,
		jsonList(k.UserGroups))
	if err != nil {
		return translate(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return versionSkipped(ctx, t.tx, k)
	}
	return nil
}

// versionSkipped is UpdateTask's error when no row was written: the task
// does not exist, or k is not one version after the stored one (a bug).
func versionSkipped(ctx context.Context, tx *sql.Tx, k broker.Task) error {
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT version FROM tasks WHERE id = $1`, k.ID).Scan(&v); err != nil {
		return translate(err)
	}
	return fmt.Errorf("sqlite: task %s is at version %d: an update to version %d skips or repeats one", k.ID, v, k.Version)
}

// InsertCredentialIfVersion records c and event if c's task is at
// version, approved, not revoking and unexpired by the store's clock, in
// one IMMEDIATE transaction.
func (s *Store) InsertCredentialIfVersion(ctx context.Context, c *broker.Credential, version int, event broker.AuditEvent) (bool, error) {
	recorded := false
	err := s.InTx(ctx, func(btx broker.Tx) error {
		t := btx.(*txn)
		var n int
		if err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE id = $1 AND version = $2
			AND status = 'approved' AND NOT revoking AND expires_at > $3`, c.TaskID, version, micros(t.clock())).Scan(&n); err != nil {
			return translate(err)
		}
		if n != 1 {
			return nil
		}
		if err := t.InsertCredential(ctx, c); err != nil {
			return err
		}
		recorded = true
		return t.AppendAudit(ctx, event)
	})
	if err != nil {
		return false, err
	}
	return recorded, nil
}

func (t *txn) InsertCredential(ctx context.Context, c *broker.Credential) error {
	err := t.tx.QueryRowContext(ctx, `INSERT INTO credentials (jti, task_id, kind, agent_iss, agent_sub,
		user_iss, user_sub, scopes, audience, issued_at, expires_at, idempotency_key, request_hash, step_up_id, jkt)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) RETURNING seq`,
		c.ID, c.TaskID, c.Kind, c.Agent.Issuer, c.Agent.Subject, c.User.Issuer, c.User.Subject,
		jsonList(c.Scopes.Strings()), c.Audience, micros(c.IssuedAt), micros(c.ExpiresAt),
		nullString(c.IdempotencyKey), nullString(c.RequestHash), nullString(c.StepUpID), c.JKT).Scan(&c.Seq)
	return translate(err)
}

func (t *txn) CredentialByIdempotencyKey(ctx context.Context, taskID, key string) (broker.Credential, error) {
	return scanCredential(t.tx.QueryRowContext(ctx, `SELECT `+credentialColumns+`
		FROM credentials WHERE task_id = $1 AND idempotency_key = $2`, taskID, key))
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (t *txn) RevokeCredentials(ctx context.Context, taskID string, at time.Time) ([]broker.Credential, error) {
	rows, err := t.tx.QueryContext(ctx, `UPDATE credentials SET revoked_at = $2
		WHERE task_id = $1 AND revoked_at IS NULL RETURNING `+credentialColumns, taskID, micros(at))
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanCredential)
}

func (t *txn) AppendAudit(ctx context.Context, events ...broker.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	var (
		seq  int64
		prev string
	)
	if err := t.tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &prev); err != nil {
		return translate(err)
	}
	for i := range events {
		e := &events[i]
		seq++
		e.Seq = seq
		e.Time = e.Time.UTC().Truncate(time.Microsecond)
		if len(e.Detail) == 0 {
			e.Detail = []byte("{}")
		}
		e.HashScheme = broker.HashSchemeCurrent
		e.Hash = broker.ChainHash(prev, *e)
		prev = e.Hash
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO audit_events (seq, time, type, actor_kind,
			actor_iss, actor_sub, task_id, detail, hash, hash_scheme) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`,
			e.Seq, micros(e.Time), e.Type, e.Actor.Kind, e.Actor.Issuer, e.Actor.Subject, e.TaskID,
			string(e.Detail), e.Hash, e.HashScheme); err != nil {
			return translate(err)
		}
	}
	_, err := t.tx.ExecContext(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, seq, prev)
	return translate(err)
}

// Task reads one task.
func (s *Store) Task(ctx context.Context, id string) (broker.Task, error) {
	return scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
}

// ListTasks lists an agent's or a user's tasks by effective status.
func (s *Store) ListTasks(ctx context.Context, f broker.TaskFilter) ([]broker.Task, error) {
	q, err := sqlq.Tasks(f, conv)
	if err != nil {
		return nil, err
	}
	return query(ctx, s.db, `SELECT `+taskColumns+` FROM tasks WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args, scanTask)
}

// Credential reads one credential by jti.
func (s *Store) Credential(ctx context.Context, jti string) (broker.Credential, error) {
	return scanCredential(s.db.QueryRowContext(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE jti = $1`, jti))
}

// CredentialAndTask reads a credential, its task and the clock.
func (s *Store) CredentialAndTask(ctx context.Context, jti string) (broker.Credential, broker.Task, time.Time, error) {
	c, err := s.Credential(ctx, jti)
	if err != nil {
		return broker.Credential{}, broker.Task{}, time.Time{}, err
	}
	t, err := s.Task(ctx, c.TaskID)
	if err != nil {
		return broker.Credential{}, broker.Task{}, time.Time{}, err
	}
	return c, t, s.now(), nil
}

// Credentials lists the issuance history.
func (s *Store) Credentials(ctx context.Context, f broker.HistoryFilter) ([]broker.Credential, error) {
	q := sqlq.Credentials(f, conv)
	return query(ctx, s.db, `SELECT `+credentialColumns+` FROM credentials WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args, scanCredential)
}

// AuditEvents lists audit events.
func (s *Store) AuditEvents(ctx context.Context, f broker.HistoryFilter) ([]broker.AuditEvent, error) {
	q := sqlq.Events(f, conv, `json_extract(detail, '$.code')`)
	return query(ctx, s.db, `SELECT seq, time, type, actor_kind, actor_iss, actor_sub, task_id, detail, hash,
		hash_scheme FROM audit_events WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args,
		func(r scanner) (broker.AuditEvent, error) {
			var (
				e      broker.AuditEvent
				at     int64
				detail string
			)
			err := r.Scan(&e.Seq, &at, &e.Type, &e.Actor.Kind, &e.Actor.Issuer, &e.Actor.Subject, &e.TaskID, &detail, &e.Hash, &e.HashScheme)
			e.Time, e.Detail = fromMicros(at), []byte(detail)
			return e, translate(err)
		})
}

// AuditHead is the newest event's seq and hash.
func (s *Store) AuditHead(ctx context.Context) (int64, string, error) {
	var (
		seq  int64
		hash string
	)
	err := s.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	return seq, hash, translate(err)
}

const keyColumns = `kid, alg, private_key, public_jwk, state, created_at, activated_at, deactivated_at, retired_at`

// SigningKeys returns every stored signing key, newest first.
func (s *Store) SigningKeys(ctx context.Context) ([]broker.SigningKey, error) {
	return query(ctx, s.db, `SELECT `+keyColumns+` FROM signing_keys ORDER BY created_at DESC`, nil, scanKey)
}

func scanKey(r scanner) (broker.SigningKey, error) {
	var (
		k                           broker.SigningKey
		pub                         string
		at                          int64
		activated, deact, retiredAt sql.NullInt64
	)
	if err := r.Scan(&k.KID, &k.Alg, &k.Private, &pub, &k.State, &at, &activated, &deact, &retiredAt); err != nil {
		return broker.SigningKey{}, translate(err)
	}
	k.PublicJWK, k.CreatedAt = []byte(pub), fromMicros(at)
	k.ActivatedAt, k.DeactivatedAt, k.RetiredAt = fromNull(activated), fromNull(deact), fromNull(retiredAt)
	return k, nil
}

// InsertCurrentKey stores k as the current key unless one exists. The
// statement inserts no row at all then: the signing_keys_no_replace
// trigger would refuse one that takes the current key's place.
func (s *Store) InsertCurrentKey(ctx context.Context, k broker.SigningKey) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO signing_keys (kid, alg, private_key, public_jwk, state, created_at, activated_at)
		SELECT $1,$2,$3,$4,'current',$5,$5 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = 'current')`,
		k.KID, k.Alg, k.Private, string(k.PublicJWK), micros(k.CreatedAt))
	if err != nil {
		return false, translate(err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ChangeKeys applies plan's change; the IMMEDIATE transaction holds
// SQLite's write lock.
func (s *Store) ChangeKeys(ctx context.Context, plan func([]broker.SigningKey, time.Time) (broker.KeyChange, error)) (broker.KeyChange, error) {
	var out broker.KeyChange
	err := s.InTx(ctx, func(btx broker.Tx) error {
		tx := btx.(*txn).tx
		keys, err := query(ctx, tx, `SELECT `+keyColumns+` FROM signing_keys ORDER BY created_at DESC`, nil, scanKey)
		if err != nil {
			return err
		}
		now := s.now()
		if out, err = plan(keys, now); err != nil {
			return err
		}
		// Leave a state before another key takes it: the one-current and
		// one-next indexes hold at every statement.
		for _, kid := range out.Ordered() {
			st := out.States[kid]
			res, err := tx.ExecContext(ctx, `UPDATE signing_keys SET state = $2,
				activated_at = CASE WHEN $2 = 'current' THEN $3 ELSE activated_at END,
				deactivated_at = CASE WHEN $2 = 'previous' THEN $3 ELSE deactivated_at END,
				retired_at = CASE WHEN $2 = 'retired' THEN $3 ELSE retired_at END
				WHERE kid = $1`, kid, st, micros(now))
			if err != nil {
				return translate(err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return broker.ErrNotFound
			}
		}
		for _, k := range out.Insert {
			var activated any
			if k.State == broker.KeyCurrent {
				activated = micros(now)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (kid, alg, private_key, public_jwk, state, created_at, activated_at)
				VALUES ($1,$2,$3,$4,$5,$6,$7)`, k.KID, k.Alg, k.Private, string(k.PublicJWK), k.State, micros(now), activated); err != nil {
				return translate(err)
			}
		}
		return btx.AppendAudit(ctx, out.Events...)
	})
	return out, err
}

type scanner interface{ Scan(dest ...any) error }

func query[T any](ctx context.Context, q queryer, sqlText string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := q.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scan)
}

func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err)
	}
	return out, nil
}

func scanTask(r scanner) (broker.Task, error) {
	var (
		t                                    broker.Task
		status, risk                         string
		scopes, approved, auds, approvedAuds string
		groups                               string
		created, expires                     int64
		approvedAt, closedAt                 sql.NullInt64
	)
	err := r.Scan(&t.ID, &t.Seq, &t.Version, &status, &t.Agent.Issuer, &t.Agent.Subject,
		&t.User.Issuer, &t.User.Subject, &t.Goal, &scopes, &approved, &auds, &approvedAuds,
		&risk, &t.Tool, &t.Dataset, &t.TTLCapped, &t.DenyReason, &created, &approvedAt, &expires, &closedAt, &t.Revoking,
		&groups, &t.Budget.MaxCredentials, &t.Budget.MaxResources, &t.RequireDPoP)
	if err != nil {
		return broker.Task{}, translate(err)
	}
	t.Status, t.Risk = broker.Status(status), broker.Risk(risk)
	if t.Scopes, err = scopesFromJSON(scopes); err != nil {
		return broker.Task{}, err
	}
	if t.ApprovedScopes, err = scopesFromJSON(approved); err != nil {
		return broker.Task{}, err
	}
	if t.Audiences, err = fromJSONList(auds); err != nil {
		return broker.Task{}, err
	}
	if t.ApprovedAudiences, err = fromJSONList(approvedAuds); err != nil {
		return broker.Task{}, err
	}
	if t.UserGroups, err = fromJSONList(groups); err != nil {
		return broker.Task{}, err
	}
	t.CreatedAt, t.ExpiresAt = fromMicros(created), fromMicros(expires)
	t.ApprovedAt, t.ClosedAt = fromNull(approvedAt), fromNull(closedAt)
	return t, nil
}

func scanCredential(r scanner) (broker.Credential, error) {
	var (
		c               broker.Credential
		scopes          string
		issued, expires int64
		revoked         sql.NullInt64
	)
	err := r.Scan(&c.ID, &c.Seq, &c.TaskID, &c.Kind, &c.Agent.Issuer, &c.Agent.Subject,
		&c.User.Issuer, &c.User.Subject, &scopes, &c.Audience, &issued, &expires, &revoked,
		&c.IdempotencyKey, &c.RequestHash, &c.StepUpID, &c.JKT)
	if err != nil {
		return broker.Credential{}, translate(err)
	}
	if c.Scopes, err = scopesFromJSON(scopes); err != nil {
		return broker.Credential{}, err
	}
	c.IssuedAt, c.ExpiresAt, c.RevokedAt = fromMicros(issued), fromMicros(expires), fromNull(revoked)
	return c, nil
}
