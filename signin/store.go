package signin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/errandhq/errand/broker"
)

// Record is a session as stored: its id only as a digest.
type Record struct {
	IDHash    string
	User      broker.Principal
	CreatedAt time.Time
	LastSeen  time.Time
	ExpiresAt time.Time
}

// Flow is a sign-in in progress: what the callback needs to finish it,
// bound to the issuer it was started for.
type Flow struct {
	StateHash   string
	Issuer      string
	Nonce       string
	Verifier    string
	RedirectURI string
	ReturnTo    string
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// Store keeps sessions and flows where every replica sees them.
type Store interface {
	// CreateSession stores a new session.
	CreateSession(ctx context.Context, r Record) error
	// Session reads a session; broker.ErrNotFound when there is none.
	Session(ctx context.Context, idHash string) (Record, error)
	// TouchSession records activity at seen.
	TouchSession(ctx context.Context, idHash string, seen time.Time) error
	// DeleteSession ends a session; ending one that is gone is no error.
	DeleteSession(ctx context.Context, idHash string) error
	// DeleteUserSessions ends every session of a user and says how many.
	DeleteUserSessions(ctx context.Context, user broker.Ref) (int, error)
	// CreateFlow stores a flow.
	CreateFlow(ctx context.Context, f Flow) error
	// TakeFlow reads and deletes a flow in one step, so that a state is
	// used at most once; broker.ErrNotFound when there is none.
	TakeFlow(ctx context.Context, stateHash string) (Flow, error)
	// DeleteExpired removes the sessions and flows expired at now.
	DeleteExpired(ctx context.Context, now time.Time) (int, error)
}

// SQLStore is the Store of both dialects, over database/sql: SQLite's
// *sql.DB, or PostgreSQL's through pgx's stdlib adapter. The tables are
// those of migration 00017; times are integer microseconds on both.
type SQLStore struct {
	DB *sql.DB
}

var _ Store = (*SQLStore)(nil)

func micros(t time.Time) int64 { return t.UTC().UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func unavailable(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: session store: %v", broker.ErrUnavailable, err)
}

func (s *SQLStore) CreateSession(ctx context.Context, r Record) error {
	groups, err := json.Marshal(r.User.Groups)
	if err != nil {
		return err
	}
	if r.User.Groups == nil {
		groups = []byte("[]")
	}
	_, err = s.DB.ExecContext(ctx, `INSERT INTO signin_sessions (id_sha256, user_iss, user_sub, user_groups,
		auditor, admin, created_at, last_seen, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)`,
		r.IDHash, r.User.Issuer, r.User.Subject, string(groups), r.User.Auditor, r.User.Admin,
		micros(r.CreatedAt), micros(r.LastSeen), micros(r.ExpiresAt))
	return unavailable(err)
}

func (s *SQLStore) Session(ctx context.Context, idHash string) (Record, error) {
	var (
		r                      Record
		groups                 string
		created, seen, expires int64
	)
	err := s.DB.QueryRowContext(ctx, `SELECT id_sha256, user_iss, user_sub, user_groups, auditor, admin,
		created_at, last_seen, expires_at FROM signin_sessions WHERE id_sha256 = $1`, idHash).Scan(
		&r.IDHash, &r.User.Issuer, &r.User.Subject, &groups, &r.User.Auditor, &r.User.Admin,
		&created, &seen, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, broker.Errorf(broker.ErrNotFound, "no such session")
	}
	if err != nil {
		return Record{}, unavailable(err)
	}
	if err := json.Unmarshal([]byte(groups), &r.User.Groups); err != nil {
		return Record{}, fmt.Errorf("session groups: %w", err)
	}
	if len(r.User.Groups) == 0 {
		r.User.Groups = nil
	}
	r.User.Kind = broker.KindUser
	r.CreatedAt, r.LastSeen, r.ExpiresAt = fromMicros(created), fromMicros(seen), fromMicros(expires)
	return r, nil
}

func (s *SQLStore) TouchSession(ctx context.Context, idHash string, seen time.Time) error {
	_, err := s.DB.ExecContext(ctx, `UPDATE signin_sessions SET last_seen = $2 WHERE id_sha256 = $1 AND last_seen < $2`,
		idHash, micros(seen))
	return unavailable(err)
}

func (s *SQLStore) DeleteSession(ctx context.Context, idHash string) error {
	_, err := s.DB.ExecContext(ctx, `DELETE FROM signin_sessions WHERE id_sha256 = $1`, idHash)
	return unavailable(err)
}

func (s *SQLStore) DeleteUserSessions(ctx context.Context, user broker.Ref) (int, error) {
	res, err := s.DB.ExecContext(ctx, `DELETE FROM signin_sessions WHERE user_iss = $1 AND user_sub = $2`,
		user.Issuer, user.Subject)
	if err != nil {
		return 0, unavailable(err)
	}
	n, err := res.RowsAffected()
	return int(n), unavailable(err)
}

func (s *SQLStore) CreateFlow(ctx context.Context, f Flow) error {
	_, err := s.DB.ExecContext(ctx, `INSERT INTO signin_flows (state_sha256, issuer, nonce, verifier,
		redirect_uri, return_to, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		f.StateHash, f.Issuer, f.Nonce, f.Verifier, f.RedirectURI, f.ReturnTo, micros(f.CreatedAt), micros(f.ExpiresAt))
	return unavailable(err)
}

func (s *SQLStore) TakeFlow(ctx context.Context, stateHash string) (Flow, error) {
	var (
		f                Flow
		created, expires int64
	)
	// DELETE … RETURNING (PostgreSQL, SQLite 3.35+): of two callbacks
	// racing with one state, one gets the flow and the other nothing.
	err := s.DB.QueryRowContext(ctx, `DELETE FROM signin_flows WHERE state_sha256 = $1
		RETURNING state_sha256, issuer, nonce, verifier, redirect_uri, return_to, created_at, expires_at`, stateHash).Scan(
		&f.StateHash, &f.Issuer, &f.Nonce, &f.Verifier, &f.RedirectURI, &f.ReturnTo, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Flow{}, broker.Errorf(broker.ErrNotFound, "no such sign-in flow")
	}
	if err != nil {
		return Flow{}, unavailable(err)
	}
	f.CreatedAt, f.ExpiresAt = fromMicros(created), fromMicros(expires)
	return f, nil
}

func (s *SQLStore) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for _, q := range []string{`DELETE FROM signin_sessions WHERE expires_at <= $1`, `DELETE FROM signin_flows WHERE expires_at <= $1`} {
		res, err := s.DB.ExecContext(ctx, q, micros(now))
		if err != nil {
			return n, unavailable(err)
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	return n, nil
}
