package sqlite

import (
	"context"
	"time"
)

// Pending counts the tasks and the step-up approvals waiting for a user's
// decision at now (pending and not yet expired), for the
// errand_tasks_pending and errand_step_ups_pending gauges (read at most
// every few seconds, whatever the scrape rate).
func (s *Store) Pending(ctx context.Context, now time.Time) (tasks, stepUps int64, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM tasks WHERE status = 'pending' AND expires_at > $1),
		(SELECT count(*) FROM step_ups WHERE status = 'pending' AND expires_at > $1)`, micros(now)).Scan(&tasks, &stepUps)
	return tasks, stepUps, translate(err)
}
