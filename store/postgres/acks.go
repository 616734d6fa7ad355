package postgres

import (
	"context"
	"time"
)

// Ack records that replica has applied the revocation feed up to seq, and
// that it is alive; it returns the database's time of the heartbeat.
func (s *Store) Ack(ctx context.Context, replica string, seq int64) (time.Time, error) {
	var at time.Time
	err := s.pool.QueryRow(ctx, `INSERT INTO replica_acks (replica, seen_seq, beat_at) VALUES ($1, $2, clock_timestamp())
		ON CONFLICT (replica) DO UPDATE SET seen_seq = GREATEST(replica_acks.seen_seq, EXCLUDED.seen_seq), beat_at = clock_timestamp()
		RETURNING beat_at`, replica, seq).Scan(&at)
	return at, translate(err)
}

// Laggards counts the replicas other than self, alive within alive, that
// have not applied the feed up to seq.
func (s *Store) Laggards(ctx context.Context, self string, seq int64, alive time.Duration) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM replica_acks
		WHERE replica <> $1 AND seen_seq < $2 AND beat_at > clock_timestamp() - make_interval(secs => $3)`,
		self, seq, alive.Seconds()).Scan(&n)
	return n, translate(err)
}

// DropAck removes a replica that stops, so that nobody waits for it.
func (s *Store) DropAck(ctx context.Context, replica string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM replica_acks WHERE replica = $1`, replica)
	return translate(err)
}

// PruneAcks removes the rows of replicas silent for longer than idle
// (crashed, never stopped cleanly); they are ignored long before.
func (s *Store) PruneAcks(ctx context.Context, idle time.Duration) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM replica_acks WHERE beat_at < clock_timestamp() - make_interval(secs => $1)`, idle.Seconds())
	return translate(err)
}
