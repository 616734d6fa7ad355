package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

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
	err := t.tx.QueryRow(ctx, `INSERT INTO step_ups (id, task_id, agent_iss, agent_sub, user_iss,
		user_sub, scopes, audience, tool, dataset, request_hash, policies, reasons, status,
		deny_reason, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)
		RETURNING seq`,
		u.ID, u.TaskID, u.Agent.Issuer, u.Agent.Subject, u.User.Issuer, u.User.Subject,
		u.Scopes.Strings(), u.Audience, u.Tool, u.Dataset, u.RequestHash, nonNil(u.Policies),
		nonNil(u.Reasons), string(u.Status), u.DenyReason, u.CreatedAt, u.ExpiresAt).Scan(&u.Seq)
	return translate(err)
}

func (t *txn) OpenStepUp(ctx context.Context, taskID, hash string, now time.Time) (broker.StepUp, error) {
	return scanStepUp(t.tx.QueryRow(ctx, `SELECT `+stepUpColumns+` FROM step_ups
		WHERE task_id = $1 AND request_hash = $2 AND status IN ('pending', 'approved') AND expires_at > $3
		ORDER BY (status = 'approved') DESC, seq DESC LIMIT 1 FOR UPDATE`, taskID, hash, now))
}

func (t *txn) DeniedStepUps(ctx context.Context, taskID string) ([]broker.StepUp, error) {
	rows, err := t.tx.Query(ctx, `SELECT `+stepUpColumns+` FROM step_ups
		WHERE task_id = $1 AND status = 'denied' AND NOT EXISTS (SELECT 1 FROM step_ups l
		WHERE l.task_id = step_ups.task_id AND l.request_hash = step_ups.request_hash AND l.seq > step_ups.seq
			AND l.status IN ('approved', 'used')) ORDER BY seq DESC LIMIT $2`, taskID, broker.MaxDenials)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanStepUp)
}

func (t *txn) PendingStepUps(ctx context.Context, taskID string, now time.Time) (int, error) {
	var n int
	err := t.tx.QueryRow(ctx, `SELECT count(*) FROM step_ups
		WHERE task_id = $1 AND status = 'pending' AND expires_at > $2`, taskID, now).Scan(&n)
	return n, translate(err)
}

func (t *txn) ReadStepUp(ctx context.Context, id string, forUpdate bool) (broker.StepUp, error) {
	q := `SELECT ` + stepUpColumns + ` FROM step_ups WHERE id = $1`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	return scanStepUp(t.tx.QueryRow(ctx, q, id))
}

func (t *txn) UpdateStepUp(ctx context.Context, u broker.StepUp) error {
	tag, err := t.tx.Exec(ctx, `UPDATE step_ups SET status=$2, deny_reason=$3, expires_at=$4,
		decided_at=$5, used_at=$6 WHERE id=$1`,
		u.ID, string(u.Status), u.DenyReason, u.ExpiresAt, nullTime(u.DecidedAt), nullTime(u.UsedAt))
	if err != nil {
		return translate(err)
	}
	if tag.RowsAffected() != 1 {
		return broker.ErrNotFound
	}
	return nil
}

func (t *txn) MintedScopes(ctx context.Context, taskID string, kinds []broker.CredentialKind) ([]broker.Scopes, error) {
	rows, err := t.tx.Query(ctx, `SELECT scopes FROM credentials WHERE task_id = $1 AND kind = ANY($2)`, taskID, kindStrings(kinds))
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, func(r pgx.Row) (broker.Scopes, error) {
		var ss []string
		if err := r.Scan(&ss); err != nil {
			return nil, translate(err)
		}
		return sqlq.ParseScopes(ss)
	})
}

// StepUp reads one step-up approval.
func (s *Store) StepUp(ctx context.Context, id string) (broker.StepUp, error) {
	return scanStepUp(s.pool.QueryRow(ctx, `SELECT `+stepUpColumns+` FROM step_ups WHERE id = $1`, id))
}

// ListStepUps lists an agent's or a user's step-up approvals.
func (s *Store) ListStepUps(ctx context.Context, f broker.StepUpFilter) ([]broker.StepUp, error) {
	q, err := sqlq.StepUps(f, nil)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+stepUpColumns+` FROM step_ups WHERE `+q.SQL()+` ORDER BY seq`+sqlq.Limit(f.Limit), q.Args...)
	if err != nil {
		return nil, translate(err)
	}
	return collect(rows, scanStepUp)
}

func scanStepUp(r pgx.Row) (broker.StepUp, error) {
	var (
		u             broker.StepUp
		scopes        []string
		status        string
		decided, used *time.Time
	)
	err := r.Scan(&u.ID, &u.Seq, &u.TaskID, &u.Agent.Issuer, &u.Agent.Subject, &u.User.Issuer,
		&u.User.Subject, &scopes, &u.Audience, &u.Tool, &u.Dataset, &u.RequestHash, &u.Policies,
		&u.Reasons, &status, &u.DenyReason, &u.CreatedAt, &u.ExpiresAt, &decided, &used)
	if err != nil {
		return broker.StepUp{}, translate(err)
	}
	u.Status = broker.StepUpStatus(status)
	if u.Scopes, err = sqlq.ParseScopes(scopes); err != nil {
		return broker.StepUp{}, err
	}
	u.CreatedAt, u.ExpiresAt = u.CreatedAt.UTC(), u.ExpiresAt.UTC()
	if decided != nil {
		u.DecidedAt = decided.UTC()
	}
	if used != nil {
		u.UsedAt = used.UTC()
	}
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
