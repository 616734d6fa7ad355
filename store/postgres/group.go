package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
)

// maxGroup bounds the credentials one group records.
const maxGroup = 32

// groupTimeout bounds one group's transaction.
const groupTimeout = 10 * time.Second

// grouper commits concurrent InsertCredentialIfVersion calls together
// (group commit), privately to this store: the first caller leads a
// transaction that records every queued credential with one statement,
// appends their audit events and commits once, with one WAL flush; calls
// arriving meanwhile form the next group. No one waits for a timer: a
// lone call commits at once, and under load the groups grow by
// themselves. Each call runs exactly once.
type grouper struct {
	mu      sync.Mutex
	queue   []*groupCall
	running bool
}

// groupCall is one InsertCredentialIfVersion in a group.
type groupCall struct {
	c       *broker.Credential
	version int
	event   broker.AuditEvent
	ok      bool // recorded
	done    chan error
}

// InsertCredentialIfVersion records c and event if c's task is at version
// and lives (see broker.Store), committed with the other calls of its
// group. The task's row is locked without waiting: a task whose row
// another transaction holds (a close under way, a locked mint) is not
// recorded here, false, and its caller takes the broker's locked branch,
// so one held task never holds up the other tasks' mints.
func (s *Store) InsertCredentialIfVersion(_ context.Context, c *broker.Credential, version int, event broker.AuditEvent) (bool, error) {
	call := &groupCall{c: c, version: version, event: event, done: make(chan error, 1)}
	s.groups.mu.Lock()
	s.groups.queue = append(s.groups.queue, call)
	if !s.groups.running {
		s.groups.running = true
		go s.lead()
	}
	s.groups.mu.Unlock()
	// The group decides; a caller that gives up early could not tell
	// whether its credential committed, so it waits for the answer.
	if err := <-call.done; err != nil {
		return false, err
	}
	return call.ok, nil
}

func (s *Store) lead() {
	g := &s.groups
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		if n == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		calls := append([]*groupCall(nil), g.queue[:n]...)
		g.queue = g.queue[n:]
		g.mu.Unlock()
		s.runGroup(calls)
	}
}

// quickSQL records a group's credentials in one statement, each only if
// its task is still at the version its caller decided on, approved, not
// revoking, and alive by the database's clock. Every other rule was
// decided in Go on that version of the task: every change of a task's
// state bumps its version. A task whose row another transaction holds is
// skipped, never waited for. The clock is read once every lock is held
// (n reads it over the aggregate of k, which has taken them all): a clock
// read before a wait would let a task that expired meanwhile still issue.
// The tasks are locked in the order of their seq, as LockOpenTasks locks
// an agent's, so a group and a suspension never wait on each other in a
// cycle. Scopes travel as one flat array, each credential's a slice of it.
// A credential whose task fails a check has no row.
const quickSQL = `WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
		$6::text[], $7::text[], $8::int[], $9::int[], $10::text[], $11::int[], $12::timestamptz[], $13::timestamptz[],
		$14::text[])
		AS r(jti, task_id, kind, agent_iss, agent_sub, user_iss, user_sub, sc_from, sc_to, audience, version,
			issued_at, expires_at, jkt)),
	t AS (SELECT tasks.id, tasks.version, tasks.expires_at FROM tasks
		WHERE tasks.id IN (SELECT task_id FROM r) AND tasks.status = 'approved' AND NOT tasks.revoking
		ORDER BY tasks.seq FOR UPDATE OF tasks SKIP LOCKED),
	k AS MATERIALIZED (SELECT r.*, t.expires_at AS task_expires FROM r JOIN t ON t.id = r.task_id AND t.version = r.version),
	n AS MATERIALIZED (SELECT clock_timestamp() AS now FROM (SELECT count(*) FROM k) locked)
	INSERT INTO credentials (jti, task_id, kind, agent_iss, agent_sub, user_iss, user_sub, scopes, audience,
		issued_at, expires_at, jkt)
	SELECT k.jti, k.task_id, k.kind, k.agent_iss, k.agent_sub, k.user_iss, k.user_sub, ($15::text[])[k.sc_from:k.sc_to],
		k.audience, k.issued_at, k.expires_at, k.jkt
	FROM k, n WHERE k.task_expires > n.now
	RETURNING jti, seq`

// quickArgs are quickSQL's arguments for calls.
func quickArgs(calls []*groupCall) []any {
	var (
		jtis, tasks, kinds, aiss, asub, uiss, usub, auds, jkts []string
		from, to, versions                                     []int32
		iats, exps                                             []time.Time
		scopes                                                 []string
	)
	for _, q := range calls {
		k := q.c
		jtis, tasks, kinds = append(jtis, k.ID), append(tasks, k.TaskID), append(kinds, string(k.Kind))
		aiss, asub = append(aiss, k.Agent.Issuer), append(asub, k.Agent.Subject)
		uiss, usub, auds = append(uiss, k.User.Issuer), append(usub, k.User.Subject), append(auds, k.Audience)
		from = append(from, int32(len(scopes)+1)) // PostgreSQL arrays count from 1
		for _, sc := range k.Scopes {
			scopes = append(scopes, sc.String())
		}
		to = append(to, int32(len(scopes)))
		versions = append(versions, int32(q.version))
		iats, exps, jkts = append(iats, k.IssuedAt), append(exps, k.ExpiresAt), append(jkts, k.JKT)
	}
	return []any{jtis, tasks, kinds, aiss, asub, uiss, usub, from, to, auds, versions, iats, exps, jkts, scopes}
}

// readQuick reads quickSQL's rows into their calls and returns the audit
// events of the recorded ones, in the order of calls.
func readQuick(rows pgx.Rows, calls []*groupCall) ([]broker.AuditEvent, error) {
	defer rows.Close()
	byJTI := make(map[string]*groupCall, len(calls))
	for _, q := range calls {
		byJTI[q.c.ID] = q
	}
	for rows.Next() {
		var (
			jti string
			seq int64
		)
		if err := rows.Scan(&jti, &seq); err != nil {
			return nil, err
		}
		q := byJTI[jti]
		if q == nil || q.ok {
			return nil, fmt.Errorf("postgres: a row for jti %q that was not asked for", jti)
		}
		q.ok, q.c.Seq = true, seq
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var events []broker.AuditEvent
	for _, q := range calls {
		if q.ok {
			events = append(events, q.event)
		}
	}
	return events, nil
}

// runGroup records a group in two round trips: the transaction's start,
// the credentials' statement and the audit head's lock in one batch (the
// tasks' locks come before the head's), then the audit events and the
// commit in another. A group that failed before its commit was sent kept
// nothing: each call answers false and its caller takes the broker's
// locked branch, where a failure is its own (one bad credential never
// fails the others). A failed commit may or may not have committed: its
// calls answer the error.
func (s *Store) runGroup(calls []*groupCall) {
	for _, q := range calls {
		q.ok = false
	}
	committing, err := s.runGroupTx(calls)
	for _, q := range calls {
		switch {
		case err == nil:
			q.done <- nil
		case committing:
			q.ok = false
			q.done <- translate(err)
		default:
			q.ok = false
			q.done <- nil
		}
	}
}

func (s *Store) runGroupTx(calls []*groupCall) (committing bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	open := false
	defer func() {
		if err != nil && open {
			// The transaction is given up; a connection that cannot say
			// so is closed, and the pool drops it.
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, rerr := conn.Exec(rctx, "ROLLBACK"); rerr != nil {
				_ = conn.Conn().Close(rctx)
			}
		}
	}()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(quickSQL, quickArgs(calls)...)
	b.Queue(headSQL)
	br := conn.SendBatch(ctx, b)
	open = true
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return false, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return false, err
	}
	events, err := readQuick(rows, calls)
	if err != nil {
		_ = br.Close()
		return false, err
	}
	var (
		seq  int64
		prev string
	)
	if err := br.QueryRow().Scan(&seq, &prev); err != nil {
		_ = br.Close()
		return false, err
	}
	if err := br.Close(); err != nil {
		return false, err
	}
	b = &pgx.Batch{}
	if len(events) > 0 {
		b.Queue(appendSQL, chainArgs(seq, prev, events)...)
	}
	b.Queue("COMMIT")
	br = conn.SendBatch(ctx, b)
	if len(events) > 0 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return true, err
		}
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && tag.String() != "COMMIT" {
		err = errors.New("postgres: the group's transaction did not commit: " + tag.String())
	}
	open = err != nil // still to be given up, or committed
	return true, err
}
