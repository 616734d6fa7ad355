package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"time"
)

// The replay cache (broker.ReplayCache), migration 00012.

// RememberJTI inserts the digest unless an unexpired one is there (an
// expired one is overwritten) and deletes the expired rows, in one
// IMMEDIATE transaction: SQLite's write lock serialises callers. The
// store's clock is this process's (one SQLite database has one node).
func (s *Store) RememberJTI(ctx context.Context, kind, jti string, expiresAt time.Time) (fresh bool, err error) {
	sum := sha256.Sum256([]byte(jti))
	now := micros(s.now())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, translate(err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `DELETE FROM seen_jtis WHERE expires_at <= $1`, now); err != nil {
		return false, translate(err)
	}
	var one int
	err = tx.QueryRowContext(ctx, `INSERT INTO seen_jtis (kind, jti_sha256, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (kind, jti_sha256) DO UPDATE SET expires_at = excluded.expires_at
		WHERE seen_jtis.expires_at <= $4
		RETURNING 1`, kind, sum[:], micros(expiresAt), now).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err = nil
	case err != nil:
		return false, translate(err)
	default:
		fresh = true
	}
	if err = tx.Commit(); err != nil {
		return false, translate(err)
	}
	return fresh, nil
}
