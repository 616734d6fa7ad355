package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/store/internal/sqlq"
)

var (
	_ broker.StepUpTx     = (*txn)(nil)
	_ broker.StepUpReader = (*Store)(nil)
)

const stepUpColumns = `id, seq, task_id, agent_iss, agent_sub, user_iss, user_sub, scopes, audience,
	tool, dataset, request_hash, policies, reasons, status, deny_reason, created_at, expires_at,
	decided_at, used_at`

func (t *txn) InsertStepUp(ctx context.Context, u *broker.StepUp) error {
	err := t.tx.QueryRowContext(ctx, `INSERT INTO step_ups (id, task_id, agent_iss, agent_sub, user_iss,
		user_sub, scopes, audience, tool, dataset, request_hash, policies, reasons, status,
		deny_reason, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
		RETURNING seq`,
		u.ID, u.TaskID, u.Agent.Issuer, u.Agent.Subject, u.User.Issuer, u.User.Subject,
		jsonList(u.Scopes.Strings()), u.Audience, u.Tool, u.Dataset, u.RequestHash, jsonList(u.Policies),
		jsonList(u.Reasons), string(u.Status), u.DenyReason, micros(u.CreatedAt), micros(u.ExpiresAt)).Scan(&u.Seq)
	return translate(err)
}

// OpenStepUp needs no row lock: the IMMEDIATE transaction holds SQLite's
// write lock.
func (t *txn) OpenStepUp(ctx context.Context, taskID, hash string, now time.Time) (broker.StepUp, error) {
	return scanStepUp(t.tx.QueryRowContext(ctx, `SELECT `+stepUpColumns+` FROM step_ups
		WHERE task_id = $1 AND request_hash = $2 AND status IN ('pending', 'approved') AND expires_at > $3
		ORDER BY (status = 'approved') DESC, seq DESC LIMIT 1`, taskID, hash, micros(now)))
}

func (t *txn) DeniedStepUps(ctx context.Context, taskID string) ([]broker.StepUp, error) {
	return query(ctx, t.tx, `SELECT `+stepUpColumns+` FROM step_ups
		WHERE task_id = $1 AND status = 'denied' AND NOT EXISTS (SELECT 1 FROM step_ups l
		WHERE l.task_id = step_ups.task_id AND l.request_hash = step_ups.request_hash AND l.seq > step_ups.seq
			AND l.status IN ('approved', 'used')) ORDER BY seq DESC LIMIT $2`, []any{taskID, broker.MaxDenials}, scanStepUp)
}

func (t *txn) PendingStepUps(ctx context.Context, taskID string, now time.Time) (int, error) {
	var n int
	err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM step_ups
		WHERE task_id = $1 AND status = 'pending' AND expires_at > $2`, taskID, micros(now)).Scan(&n)
	return n, translate(err)
}

func (t *txn) ReadStepUp(ctx context.Context, id string, _ bool) (broker.StepUp, error) {
	return scanStepUp(t.tx.QueryRowContext(ctx, `SELECT `+stepUpColumns+` FROM step_ups WHERE id = $1`, id))
}

func (t *txn) UpdateStepUp(ctx context.Context, u broker.StepUp) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE step_ups SET status=$2, deny_reason=$3, expires_at=$4,
		decided_at=$5, used_at=$6 WHERE id=$1`,
		u.ID, string(u.Status), u.DenyReason, micros(u.ExpiresAt), nullMicros(u.DecidedAt), nullMicros(u.UsedAt))
	if err != nil {
		return translate(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return broker.ErrNotFound
	}
	return nil
}

func (t *txn) MintedScopes(ctx context.Context, taskID string, kinds []broker.CredentialKind) ([]broker.Scopes, error) {
	return query(ctx, t.tx, `SELECT scopes FROM credentials WHERE task_id = $1 AND kind IN (SELECT value FROM json_each($2))`,
		[]any{taskID, jsonList(kindStrings(kinds))}, func(r scanner) (broker.Scopes, error) {
			var s string
			if err := r.Scan(&s); err != nil {
				return nil, translate(err)
			}
			return scopesFromJSON(s)
		})
}

// StepUp reads one step-up approval.
func (s *Store) StepUp(ctx context.Context, id string) (broker.StepUp, error) {
	return scanStepUp(s.db.QueryRowContext(ctx, `SELECT `+stepUpColumns+` FROM step_ups WHERE id = $1`, id))
}

// ListStepUps lists an agent's or a user's step-up approvals.
func (s *Store) ListStepUps(ctx context.Context, f broker.StepUpFilter) ([]broker.StepUp, error) {
	q, err := sqlq.StepUps(f, conv)
	if err != nil {
		return nil, err
	}
	return query(ctx, s.db, `SELECT `+stepUpColumns+` FROM step_ups WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args, scanStepUp)
}

func scanStepUp(r scanner) (broker.StepUp, error) {
	var (
		u                         broker.StepUp
		scopes, policies, reasons string
		status                    string
		created, expires          int64
		decided, used             sql.NullInt64
	)
	err := r.Scan(&u.ID, &u.Seq, &u.TaskID, &u.Agent.Issuer, &u.Agent.Subject, &u.User.Issuer,
		&u.User.Subject, &scopes, &u.Audience, &u.Tool, &u.Dataset, &u.RequestHash, &policies,
		&reasons, &status, &u.DenyReason, &created, &expires, &decided, &used)
	if err != nil {
		return broker.StepUp{}, translate(err)
	}
	u.Status = broker.StepUpStatus(status)
	if u.Scopes, err = scopesFromJSON(scopes); err != nil {
		return broker.StepUp{}, err
	}
	if u.Policies, err = fromJSONList(policies); err != nil {
		return broker.StepUp{}, err
	}
	if u.Reasons, err = fromJSONList(reasons); err != nil {
		return broker.StepUp{}, err
	}
	u.CreatedAt, u.ExpiresAt = fromMicros(created), fromMicros(expires)
	u.DecidedAt, u.UsedAt = fromNull(decided), fromNull(used)
	return u, nil
}

// kindStrings are kinds as the database stores them.
func kindStrings(kinds []broker.CredentialKind) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = string(k)
	}
	return out
}
