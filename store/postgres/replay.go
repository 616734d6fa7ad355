package postgres

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/jackc/pgx/v5"
)

// The replay cache (broker.ReplayCache), migration 00012.

// replaySweep bounds how many expired identifiers one call deletes, so
// that a backlog is cleared over several calls, never in one long one.
const replaySweep = 64

// RememberJTI inserts the digest unless an unexpired one is there (an
// expired one is overwritten), by PostgreSQL's clock, and sweeps a few
// expired rows in the same round trip. ON CONFLICT makes the check and
// the record one step: of concurrent callers exactly one inserts.
func (s *Store) RememberJTI(ctx context.Context, kind, jti string, expiresAt time.Time) (bool, error) {
	sum := sha256.Sum256([]byte(jti))
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM seen_jtis WHERE ctid = ANY (ARRAY(
		SELECT ctid FROM seen_jtis WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED))`, replaySweep)
	var fresh bool
	b.Queue(`INSERT INTO seen_jtis (kind, jti_sha256, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (kind, jti_sha256) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE seen_jtis.expires_at <= now()
		RETURNING true`, kind, sum[:], expiresAt).QueryRow(func(r pgx.Row) error {
		err := r.Scan(&fresh)
		if err == pgx.ErrNoRows {
			return nil
		}
		return err
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, translate(err)
	}
	return fresh, nil
}
