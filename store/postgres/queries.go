package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/store/internal/sqlq"
)

type txn struct {
	tx pgx.Tx
}

var _ broker.Tx = (*txn)(nil)

const taskColumns = `id, seq, version, status, agent_iss, agent_sub, user_iss, user_sub, goal,
	scopes, approved_scopes, audiences, approved_audiences, risk, tool, dataset, ttl_capped,
	deny_reason, created_at, approved_at, expires_at, closed_at, revoking, user_groups,
	max_credentials, max_resources, require_dpop`

func (t *txn) InsertTask(ctx context.Context, k *broker.Task) error {
	err := t.tx.QueryRow(ctx, `INSERT INTO tasks (id, version, status, agent_iss, agent_sub,
		user_iss, user_sub, goal, scopes, approved_scopes, audiences, approved_audiences, risk,
		tool, dataset, ttl_capped, deny_reason, created_at, approved_at, expires_at, closed_at, revoking,
		user_groups, max_credentials, max_resources, require_dpop)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26)
		RETURNING seq`,
		k.ID, k.Version, string(k.Status), k.Agent.Issuer, k.Agent.Subject, k.User.Issuer,
		k.User.Subject, k.Goal, k.Scopes.Strings(), k.ApprovedScopes.Strings(), nonNil(k.Audiences),
		nonNil(k.ApprovedAudiences), string(k.Risk), k.Tool, k.Dataset, k.TTLCapped, k.DenyReason,
		k.CreatedAt, nullTime(k.ApprovedAt), k.ExpiresAt, nullTime(k.ClosedAt), k.Revoking,
		nonNil(k.UserGroups), k.Budget.MaxCredentials, k.Budget.MaxResources, k.RequireDPoP).Scan(&k.Seq)
	return translate(err)
}

// Now is the database's clock, read after the locks taken so far.
func (t *txn) Now(ctx context.Context) (time.Time, error) {
	var at time.Time
	err := t.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&at)
	return at, translate(err)
}

func (t *txn) LockTask(ctx context.Context, id string) (broker.Task, error) {
	return scanTask(t.tx.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1 FOR UPDATE`, id))
}

// LockTaskChecked is LockTask, the agent's suspension and the database's
// clock in one round trip. The clock is read in the outer query, from the
// locked row: once the lock is granted, however long that took (in the
// locking query's own list it would be read before the wait, and a task
// that expired meanwhile could still issue).
func (t *txn) LockTaskChecked(ctx context.Context, id string) (broker.Task, bool, time.Time, error) {
	var (
		suspended bool
		now       time.Time
	)
	k, err := scanTaskWith(t.tx.QueryRow(ctx, `WITH locked AS (SELECT `+taskColumns+`,
		EXISTS (SELECT 1 FROM suspended_agents s WHERE s.agent_iss = tasks.agent_iss AND s.agent_sub = tasks.agent_sub) AS suspended
		FROM tasks WHERE id = $1 FOR UPDATE OF tasks)
		SELECT `+taskColumns+`, suspended, clock_timestamp() FROM locked`, id), &suspended, &now)
	return k, suspended, now, err
}

func (t *txn) UpdateTask(ctx context.Context, k broker.Task) error {
	tag, err := t.tx.Exec(ctx, `UPDATE tasks SET version=$2, status=$3, approved_scopes=$4,
		approved_audiences=$5, deny_reason=$6, approved_at=$7, expires_at=$8, closed_at=$9, revoking=$10,
		user_groups=$11 WHERE id=$1 AND version=$2-1`,
		k.ID, k.Version, string(k.Status), k.ApprovedScopes.Strings(), nonNil(k.ApprovedAudiences),
		k.DenyReason, nullTime(k.ApprovedAt), k.ExpiresAt, nullTime(k.ClosedAt), k.Revoking, nonNil(k.UserGroups))
	if err != nil {
		return translate(err)
	}
	if tag.RowsAffected() != 1 {
		var v int
		if err := t.tx.QueryRow(ctx, `SELECT version FROM tasks WHERE id = $1`, k.ID).Scan(&v); err != nil {
			return translate(err)
		}
		return fmt.Errorf("postgres: task %s is at version %d: an update to version %d skips or repeats one", k.ID, v, k.Version)
	}
	return nil
}

func (t *txn) InsertCredential(ctx context.Context, c *broker.Credential) error {
	// The task must exist: there is no foreign key (migration 00009), and
	// callers hold the task's row lock already.
	err := t.tx.QueryRow(ctx, `INSERT INTO credentials (jti, task_id, kind, agent_iss, agent_sub,
		user_iss, user_sub, scopes, audience, issued_at, expires_at, idempotency_key, request_hash, step_up_id, jkt)
		SELECT $1::text, id, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text[], $9::text,
			$10::timestamptz, $11::timestamptz, $12::text, $13::text, $14::text, $15::text FROM tasks WHERE id = $2
		RETURNING seq`,
		c.ID, c.TaskID, c.Kind, c.Agent.Issuer, c.Agent.Subject, c.User.Issuer, c.User.Subject,
		c.Scopes.Strings(), c.Audience, c.IssuedAt, c.ExpiresAt, nullString(c.IdempotencyKey),
		nullString(c.RequestHash), nullString(c.StepUpID), c.JKT).Scan(&c.Seq)
	return translate(err)
}

func (t *txn) CredentialByIdempotencyKey(ctx context.Context, taskID, key string) (broker.Credential, error) {
	return scanCredential(t.tx.QueryRow(ctx, `SELECT `+credentialColumns+`
		FROM credentials WHERE task_id = $1 AND idempotency_key = $2`, taskID, key))
}

const credentialColumns = `jti, seq, task_id, kind, agent_iss, agent_sub, user_iss, user_sub,
	scopes, audience, issued_at, expires_at, revoked_at, coalesce(idempotency_key, ''), coalesce(request_hash, ''),
	coalesce(step_up_id, ''), jkt`

func (t *txn) RevokeCredentials(ctx context.Context, taskID string, at time.Time) ([]broker.Credential, error) {
	rows, err := t.tx.Query(ctx, `UPDATE credentials SET revoked_at = $2
		WHERE task_id = $1 AND revoked_at IS NULL RETURNING `+credentialColumns, taskID, at)
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
	if err := t.tx.QueryRow(ctx, headSQL).Scan(&seq, &prev); err != nil {
		return translate(err)
	}
	_, err := t.tx.Exec(ctx, appendSQL, chainArgs(seq, prev, events)...)
	return translate(err)
}

// headSQL reads and locks the audit chain's head until the transaction
// ends: appending serialises on it.
const headSQL = `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`

// appendSQL inserts events and moves the head in one statement, the
// events' columns sent as arrays: a statement per event cost PostgreSQL
// an executor start-up each, the larger part of a small insert.
const appendSQL = `WITH ins AS (INSERT INTO audit_events (seq, time, type, actor_kind, actor_iss,
		actor_sub, task_id, detail, hash, hash_scheme)
	SELECT s, tm, ty, ak, ai, asb, ti, d::json, h, $12::smallint
	FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::text[]) AS e(s, tm, ty, ak, ai, asb, ti, d, h))
	UPDATE audit_head SET seq = $10, hash = $11 WHERE id = 1`

// chainArgs chains events after the head (seq, prev), assigning their Seq,
// HashScheme (the current one) and Hash in place, and returns appendSQL's
// arguments.
func chainArgs(seq int64, prev string, events []broker.AuditEvent) []any {
	n := len(events)
	var (
		seqs                            = make([]int64, n)
		times                           = make([]time.Time, n)
		types, kinds, isss, subs, tasks = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		details, hashes                 = make([]string, n), make([]string, n)
	)
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
		seqs[i], times[i], types[i], kinds[i], isss[i], subs[i], tasks[i] =
			e.Seq, e.Time, e.Type, e.Actor.Kind, e.Actor.Issuer, e.Actor.Subject, e.TaskID
		details[i], hashes[i] = string(e.Detail), e.Hash
	}
	return []any{seqs, times, types, kinds, isss, subs, tasks, details, hashes, seq, prev, broker.HashSchemeCurrent}
}

// Task reads one task.
func (s *Store) Task(ctx context.Context, id string) (broker.Task, error) {
	return scanTask(s.pool.QueryRow(ctx, `SELECT `+taskColumns+` FROM tasks WHERE id = $1`, id))
}

// ListTasks lists an agent's or a user's tasks by effective status.
func (s *Store) ListTasks(ctx context.Context, f broker.TaskFilter) ([]broker.Task, error) {
	q, err := sqlq.Tasks(f, nil)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+taskColumns+` FROM tasks WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args...)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanTask)
}

// credentialAndTaskColumns are credentialColumns of c then taskColumns of t.
const credentialAndTaskColumns = `c.jti, c.seq, c.task_id, c.kind, c.agent_iss, c.agent_sub, c.user_iss, c.user_sub,
	c.scopes, c.audience, c.issued_at, c.expires_at, c.revoked_at, coalesce(c.idempotency_key, ''),
	coalesce(c.request_hash, ''), coalesce(c.step_up_id, ''), c.jkt,
	t.id, t.seq, t.version, t.status, t.agent_iss, t.agent_sub, t.user_iss, t.user_sub, t.goal,
	t.scopes, t.approved_scopes, t.audiences, t.approved_audiences, t.risk, t.tool, t.dataset, t.ttl_capped,
	t.deny_reason, t.created_at, t.approved_at, t.expires_at, t.closed_at, t.revoking, t.user_groups,
	t.max_credentials, t.max_resources, t.require_dpop`

// CredentialAndTask reads a credential, its task and the database's
// clock in one round trip, for introspection.
func (s *Store) CredentialAndTask(ctx context.Context, jti string) (broker.Credential, broker.Task, time.Time, error) {
	var (
		cs  credentialScan
		ts  taskScan
		now time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT `+credentialAndTaskColumns+`, clock_timestamp()
		FROM credentials c JOIN tasks t ON t.id = c.task_id WHERE c.jti = $1`, jti).
		Scan(append(append(cs.dest(), ts.dest()...), &now)...)
	if err != nil {
		return broker.Credential{}, broker.Task{}, time.Time{}, translate(err)
	}
	c, err := cs.credential()
	if err != nil {
		return broker.Credential{}, broker.Task{}, time.Time{}, err
	}
	t, err := ts.task()
	return c, t, now.UTC().Truncate(time.Microsecond), err
}

// Credential reads one credential by jti.
func (s *Store) Credential(ctx context.Context, jti string) (broker.Credential, error) {
	return scanCredential(s.pool.QueryRow(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE jti = $1`, jti))
}

// Credentials lists the issuance history.
func (s *Store) Credentials(ctx context.Context, f broker.HistoryFilter) ([]broker.Credential, error) {
	q := sqlq.Credentials(f, nil)
	rows, err := s.pool.Query(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args...)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanCredential)
}

// AuditEvents lists audit events.
func (s *Store) AuditEvents(ctx context.Context, f broker.HistoryFilter) ([]broker.AuditEvent, error) {
	q := sqlq.Events(f, nil, `(detail->>'code')`)
	rows, err := s.pool.Query(ctx, `SELECT seq, time, type, actor_kind, actor_iss, actor_sub,
		task_id, detail::text, hash, hash_scheme FROM audit_events WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args...)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, func(r pgx.Row) (broker.AuditEvent, error) {
		var (
			e      broker.AuditEvent
			detail string
		)
		err := r.Scan(&e.Seq, &e.Time, &e.Type, &e.Actor.Kind, &e.Actor.Issuer, &e.Actor.Subject,
			&e.TaskID, &detail, &e.Hash, &e.HashScheme)
		e.Detail = []byte(detail)
		e.Time = e.Time.UTC()
		return e, err
	})
}

// AuditHead is the newest event's seq and hash.
func (s *Store) AuditHead(ctx context.Context) (int64, string, error) {
	var (
		seq  int64
		hash string
	)
	err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	return seq, hash, translate(err)
}

const keyColumns = `kid, alg, private_key, public_jwk, state, created_at, activated_at, deactivated_at, retired_at`

// SigningKeys returns every stored signing key, newest first.
func (s *Store) SigningKeys(ctx context.Context) ([]broker.SigningKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM signing_keys ORDER BY created_at DESC`)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanKey)
}

func scanKey(r pgx.Row) (broker.SigningKey, error) {
	var (
		k                           broker.SigningKey
		pub                         string
		activated, deact, retiredAt *time.Time
	)
	if err := r.Scan(&k.KID, &k.Alg, &k.Private, &pub, &k.State, &k.CreatedAt, &activated, &deact, &retiredAt); err != nil {
		return broker.SigningKey{}, translate(err)
	}
	k.PublicJWK, k.CreatedAt = []byte(pub), k.CreatedAt.UTC()
	for _, p := range []struct {
		src *time.Time
		dst *time.Time
	}{{activated, &k.ActivatedAt}, {deact, &k.DeactivatedAt}, {retiredAt, &k.RetiredAt}} {
		if p.src != nil {
			*p.dst = p.src.UTC()
		}
	}
	return k, nil
}

// InsertCurrentKey stores k as the current key unless one exists.
func (s *Store) InsertCurrentKey(ctx context.Context, k broker.SigningKey) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO signing_keys (kid, alg, private_key, public_jwk, state, created_at, activated_at)
		VALUES ($1,$2,$3,$4,'current',$5,$5) ON CONFLICT DO NOTHING`,
		k.KID, k.Alg, k.Private, string(k.PublicJWK), k.CreatedAt)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// ChangeKeys applies plan's change under a lock of every key row.
func (s *Store) ChangeKeys(ctx context.Context, plan func([]broker.SigningKey, time.Time) (broker.KeyChange, error)) (broker.KeyChange, error) {
	var out broker.KeyChange
	err := s.InTx(ctx, func(btx broker.Tx) error {
		tx := btx.(*txn).tx
		// The table lock (not only the rows') also serialises a first
		// insert against a concurrent one.
		if _, err := tx.Exec(ctx, `LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT `+keyColumns+` FROM signing_keys ORDER BY created_at DESC`)
		if err != nil {
			return err
		}
		keys, err := collect(rows, scanKey)
		if err != nil {
			return err
		}
		var now time.Time
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
			return err
		}
		if out, err = plan(keys, now.UTC()); err != nil {
			return err
		}
		// Leave a state before another key takes it: the one-current and
		// one-next indexes hold at every statement.
		for _, kid := range out.Ordered() {
			st := out.States[kid]
			tag, err := tx.Exec(ctx, `UPDATE signing_keys SET state = $2,
				activated_at = CASE WHEN $2 = 'current' THEN $3 ELSE activated_at END,
				deactivated_at = CASE WHEN $2 = 'previous' THEN $3 ELSE deactivated_at END,
				retired_at = CASE WHEN $2 = 'retired' THEN $3 ELSE retired_at END
				WHERE kid = $1`, kid, st, now)
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 1 {
				return broker.ErrNotFound
			}
		}
		for _, k := range out.Insert {
			if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, alg, private_key, public_jwk, state, created_at, activated_at)
				VALUES ($1,$2,$3,$4,$5,$6,CASE WHEN $5 = 'current' THEN $6::timestamptz END)`,
				k.KID, k.Alg, k.Private, string(k.PublicJWK), k.State, now); err != nil {
				return err
			}
		}
		return btx.AppendAudit(ctx, out.Events...)
	})
	return out, err
}

func scanTask(r pgx.Row) (broker.Task, error) { return scanTaskWith(r) }

// scanTaskWith scans a task and then the extra columns into extra.
func scanTaskWith(r pgx.Row, extra ...any) (broker.Task, error) {
	var ts taskScan
	if err := r.Scan(append(ts.dest(), extra...)...); err != nil {
		return broker.Task{}, translate(err)
	}
	return ts.task()
}

// taskScan receives the taskColumns of a row.
type taskScan struct {
	t                    broker.Task
	status, risk         string
	scopes, approved     []string
	approvedAt, closedAt *time.Time
}

func (s *taskScan) dest() []any {
	t := &s.t
	return []any{&t.ID, &t.Seq, &t.Version, &s.status, &t.Agent.Issuer, &t.Agent.Subject,
		&t.User.Issuer, &t.User.Subject, &t.Goal, &s.scopes, &s.approved, &t.Audiences,
		&t.ApprovedAudiences, &s.risk, &t.Tool, &t.Dataset, &t.TTLCapped, &t.DenyReason,
		&t.CreatedAt, &s.approvedAt, &t.ExpiresAt, &s.closedAt, &t.Revoking, &t.UserGroups,
		&t.Budget.MaxCredentials, &t.Budget.MaxResources, &t.RequireDPoP}
}

func (s *taskScan) task() (broker.Task, error) {
	t := s.t
	var err error
	t.Status, t.Risk = broker.Status(s.status), broker.Risk(s.risk)
	if t.Scopes, err = sqlq.ParseScopes(s.scopes); err != nil {
		return broker.Task{}, err
	}
	if t.ApprovedScopes, err = sqlq.ParseScopes(s.approved); err != nil {
		return broker.Task{}, err
	}
	t.CreatedAt, t.ExpiresAt = t.CreatedAt.UTC(), t.ExpiresAt.UTC()
	if s.approvedAt != nil {
		t.ApprovedAt = s.approvedAt.UTC()
	}
	if s.closedAt != nil {
		t.ClosedAt = s.closedAt.UTC()
	}
	return t, nil
}

func scanCredential(r pgx.Row) (broker.Credential, error) {
	var cs credentialScan
	if err := r.Scan(cs.dest()...); err != nil {
		return broker.Credential{}, translate(err)
	}
	return cs.credential()
}

// credentialScan receives the credentialColumns of a row.
type credentialScan struct {
	c       broker.Credential
	scopes  []string
	revoked *time.Time
}

func (s *credentialScan) dest() []any {
	c := &s.c
	return []any{&c.ID, &c.Seq, &c.TaskID, &c.Kind, &c.Agent.Issuer, &c.Agent.Subject,
		&c.User.Issuer, &c.User.Subject, &s.scopes, &c.Audience, &c.IssuedAt, &c.ExpiresAt, &s.revoked,
		&c.IdempotencyKey, &c.RequestHash, &c.StepUpID, &c.JKT}
}

func (s *credentialScan) credential() (broker.Credential, error) {
	c := s.c
	var err error
	if c.Scopes, err = sqlq.ParseScopes(s.scopes); err != nil {
		return broker.Credential{}, err
	}
	c.IssuedAt, c.ExpiresAt = c.IssuedAt.UTC(), c.ExpiresAt.UTC()
	if s.revoked != nil {
		c.RevokedAt = s.revoked.UTC()
	}
	return c, nil
}

func collect[T any](rows pgx.Rows, scan func(pgx.Row) (T, error)) ([]T, error) {
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

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
