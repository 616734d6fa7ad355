package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errandhq/errand/broker"
)

// maxGroup bounds the transactions committed together: each runs in its
// own savepoint, and PostgreSQL keeps up to 64 subtransactions per
// transaction in shared memory before it spills.
const maxGroup = 32

// lanes is how many groups run at once. A call goes to the lane of its
// key (the task), so two groups never hold rows of the same task and
// cannot deadlock on them. Two lanes paid while every mint spent two
// round trips inside its group; since a group of quick mints is one
// statement and two round trips, one lane does as much work with groups
// twice as large, hence fewer commits and round trips per mint: 19 % less
// CPU per mint at c = 32 (docs/benchmarks.md).
const lanes = 1

// groupTimeout bounds one group's transaction.
const groupTimeout = 10 * time.Second

var _ broker.GroupStore = (*Store)(nil)

// grouper commits concurrent InGroupTx and IssueQuick calls together
// (group commit): the first caller leads a transaction in which the quick
// calls are recorded by one statement and every queued function runs in
// its own savepoint, then commits once, with one WAL flush; calls arriving
// meanwhile form the next group. No one waits for a timer: a lone call
// commits at once, and under load the groups grow by themselves.
type grouper struct {
	mu      sync.Mutex
	queue   []*groupCall
	running bool
}

type groupCall struct {
	ctx   context.Context       // the caller's, for a run of its own
	fn    func(broker.Tx) error // a function, or
	quick *quickCall            // a quick issuance
	err   error                 // fn's own failure
	// alone is set when fn found its task locked by another transaction:
	// the group never waits on such a lock (it would hold up every call
	// of the group), so fn runs again in a transaction of its own.
	alone bool
	done  chan error
}

// quickCall is an IssueQuick in a group.
type quickCall struct {
	c       *broker.Credential
	version int
	ttl     time.Duration
	event   func(broker.Credential, time.Time) broker.AuditEvent
	ok      bool
}

// InGroupTx runs fn like InTx, possibly in one transaction with other
// callers' functions, and returns once that transaction has committed
// (or fn's work was rolled back). fn's audit events are appended for the
// whole group at its end, after every row lock the group takes, so that
// the audit head stays the last lock of every transaction; their Seq and
// Hash are therefore not known inside fn.
func (s *Store) InGroupTx(ctx context.Context, key string, fn func(broker.Tx) error) error {
	return s.enqueue(key, &groupCall{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

var _ broker.QuickIssuer = (*Store)(nil)

// IssueQuick records a credential in one statement of a group (see
// broker.QuickIssuer); the group sends the statements of all its quick
// calls in one batch, ahead of its other calls. quickSQL records bearer
// credentials only: a DPoP-bound one (c.JKT) is refused here, false, and
// takes the slow path, never recorded unbound.
func (s *Store) IssueQuick(_ context.Context, c *broker.Credential, version int, ttl time.Duration,
	event func(broker.Credential, time.Time) broker.AuditEvent) (bool, error) {
	if c.JKT != "" {
		return false, nil
	}
	q := &quickCall{c: c, version: version, ttl: ttl, event: event}
	if err := s.enqueue(c.TaskID, &groupCall{quick: q, done: make(chan error, 1)}); err != nil {
		return false, err
	}
	return q.ok, nil
}

func (s *Store) enqueue(key string, c *groupCall) error {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	g := &s.groups[h.Sum32()%lanes]
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if !g.running {
		g.running = true
		go s.lead(g)
	}
	g.mu.Unlock()
	// The group decides; a caller that gives up early could not tell
	// whether its work committed, so it waits for the answer.
	return <-c.done
}

func (s *Store) lead(g *grouper) {
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

// groupTx is a transaction of a group: AppendAudit collects the events of
// the function running, appended by the group before it commits.
type groupTx struct {
	*txn
	events []broker.AuditEvent
}

func (t *groupTx) AppendAudit(_ context.Context, events ...broker.AuditEvent) error {
	t.events = append(t.events, events...)
	return nil
}

// quickSQL records the credentials of a group's quick calls, in one
// statement, each under its task's row lock and only if the task is as
// its caller decided it was: at its version, of its agent and user,
// approved, not revoking, its agent not suspended, alive at least a whole
// second past the database's clock. A task whose row another transaction
// holds is skipped, never waited for: its call has no row and takes the
// slow path on its own, so one held task lock (a close under way, a
// client's long transaction) never holds up the other tasks' mints. Under
// READ COMMITTED a close (or a
// suspension, which closes) committed while the statement waited for a
// lock is seen when the row is re-checked, and the version check catches
// any other change. The clock is read once every lock is held (n reads
// it over the aggregate of k, which has taken them all): a clock read
// before a wait would let a task that expired meanwhile still issue. The
// tasks are locked in the order of their seq, as LockOpenTasks locks an
// agent's, so a group of quick calls only and a suspension never wait on
// each other in a cycle. Scopes travel as one flat array, each
// credential's a slice of it. A call whose checks fail has no row.
const quickSQL = `WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
		$6::text[], $7::text[], $8::int[], $9::int[], $10::text[], $11::int[], $12::bigint[])
		AS r(jti, task_id, kind, agent_iss, agent_sub, user_iss, user_sub, sc_from, sc_to, audience, version, ttl)),
	t AS (SELECT tasks.id, tasks.version, tasks.expires_at, tasks.agent_iss, tasks.agent_sub, tasks.user_iss, tasks.user_sub
		FROM tasks WHERE tasks.id IN (SELECT task_id FROM r) AND tasks.status = 'approved' AND NOT tasks.revoking
		AND NOT EXISTS (SELECT 1 FROM suspended_agents s WHERE s.agent_iss = tasks.agent_iss AND s.agent_sub = tasks.agent_sub)
		ORDER BY tasks.seq FOR UPDATE OF tasks SKIP LOCKED),
	k AS MATERIALIZED (SELECT r.*, t.expires_at FROM r JOIN t ON t.id = r.task_id AND t.version = r.version
		AND t.agent_iss = r.agent_iss AND t.agent_sub = r.agent_sub AND t.user_iss = r.user_iss AND t.user_sub = r.user_sub),
	n AS MATERIALIZED (SELECT c AS now, date_trunc('second', c) AS iat
		FROM (SELECT clock_timestamp() AS c FROM (SELECT count(*) FROM k) locked) x)
	INSERT INTO credentials (jti, task_id, kind, agent_iss, agent_sub, user_iss, user_sub, scopes, audience,
		issued_at, expires_at)
	SELECT k.jti, k.task_id, k.kind, k.agent_iss, k.agent_sub, k.user_iss, k.user_sub, ($13::text[])[k.sc_from:k.sc_to],
		k.audience, n.iat,
		n.iat + least(k.ttl, floor(extract(epoch FROM k.expires_at - n.iat))::bigint) * interval '1 second'
	FROM k, n WHERE k.expires_at >= n.iat + interval '1 second'
	RETURNING jti, seq, issued_at, expires_at, (SELECT now FROM n)`

// errQuick is a failed statement of a group's quick batch: the group is
// run again without its quick calls, which then take the slow path.
var errQuick = errors.New("postgres: a quick issuance failed")

func (s *Store) runGroup(calls []*groupCall) {
	err := s.runGroupTx(calls)
	if errors.Is(err, errQuick) {
		// The quick calls answer false: each caller takes the slow path,
		// where a failure is its own. The others run again without them.
		rest := calls[:0:0]
		for _, c := range calls {
			if c.quick != nil {
				c.quick.ok = false
				c.done <- nil
			} else {
				rest = append(rest, c)
			}
		}
		if len(rest) == 0 {
			return
		}
		calls, err = rest, s.runGroupTx(rest)
	}
	for _, c := range calls {
		if c.alone {
			// Its own transaction waits for the task's lock, holding up
			// no one else; fn has been undone here (or never ran a
			// statement), so running it again is running it once.
			go func(c *groupCall) { c.done <- s.InTx(c.ctx, c.fn) }(c)
			continue
		}
		if c.quick != nil && err != nil {
			c.quick.ok = false
		}
		res := c.err
		if err != nil && res == nil {
			// The group did not commit: nothing of this call is kept.
			res = translate(err)
		}
		c.done <- res
	}
}

// runQuick records the group's quick calls with one statement.
func runQuick(ctx context.Context, tx pgx.Tx, calls []*groupCall) ([]broker.AuditEvent, error) {
	args, byJTI := quickArgs(calls)
	if args == nil {
		return nil, nil
	}
	rows, err := tx.Query(ctx, quickSQL, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errQuick, err)
	}
	return readQuick(rows, byJTI)
}

// quickArgs are quickSQL's arguments for the quick calls among calls (nil
// when there are none), and those calls by jti.
func quickArgs(calls []*groupCall) ([]any, map[string]*quickCall) {
	var (
		jtis, tasks, kinds, aiss, asub, uiss, usub, auds []string
		from, to, versions                               []int32
		ttls                                             []int64
		scopes                                           []string
		byJTI                                            = map[string]*quickCall{}
	)
	for _, c := range calls {
		q := c.quick
		if q == nil {
			continue
		}
		k := q.c
		byJTI[k.JTI] = q
		jtis, tasks, kinds = append(jtis, k.JTI), append(tasks, k.TaskID), append(kinds, k.Kind)
		aiss, asub = append(aiss, k.Agent.Issuer), append(asub, k.Agent.Subject)
		uiss, usub, auds = append(uiss, k.User.Issuer), append(usub, k.User.Subject), append(auds, k.Audience)
		from = append(from, int32(len(scopes)+1)) // PostgreSQL arrays count from 1
		for _, sc := range k.Scopes {
			scopes = append(scopes, sc.String())
		}
		to = append(to, int32(len(scopes)))
		versions, ttls = append(versions, int32(q.version)), append(ttls, int64(q.ttl/time.Second))
	}
	if len(jtis) == 0 {
		return nil, nil
	}
	return []any{jtis, tasks, kinds, aiss, asub, uiss, usub, from, to, auds, versions, ttls, scopes}, byJTI
}

// readQuick reads quickSQL's rows into their calls and returns the audit
// events of the recorded ones. Any failure is errQuick's.
func readQuick(rows pgx.Rows, byJTI map[string]*quickCall) ([]broker.AuditEvent, error) {
	defer rows.Close()
	var events []broker.AuditEvent
	for rows.Next() {
		var (
			jti           string
			seq           int64
			iat, exp, now time.Time
		)
		if err := rows.Scan(&jti, &seq, &iat, &exp, &now); err != nil {
			return nil, fmt.Errorf("%w: %w", errQuick, err)
		}
		q := byJTI[jti]
		if q == nil || q.ok {
			return nil, fmt.Errorf("%w: a row for jti %q that was not asked for", errQuick, jti)
		}
		q.ok = true
		q.c.Seq, q.c.IssuedAt, q.c.ExpiresAt = seq, iat.UTC(), exp.UTC()
		events = append(events, q.event(*q.c, now))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errQuick, err)
	}
	return events, nil
}

// runQuickGroup runs a group of quick calls only in two round trips: the
// transaction's start, the credentials' statement and the audit head's
// lock in one batch (the tasks' locks still come before the head's), then
// the audit events and the commit in another.
func (s *Store) runQuickGroup(ctx context.Context, calls []*groupCall) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
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
	args, byJTI := quickArgs(calls)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(quickSQL, args...)
	b.Queue(headSQL)
	br := conn.SendBatch(ctx, b)
	open = true
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return fmt.Errorf("%w: %w", errQuick, err)
	}
	events, err := readQuick(rows, byJTI)
	if err != nil {
		_ = br.Close()
		return err
	}
	var (
		seq  int64
		prev string
	)
	if err := br.QueryRow().Scan(&seq, &prev); err != nil {
		_ = br.Close()
		return err
	}
	if err := br.Close(); err != nil {
		return err
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
			return err
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
	return err
}

// runGroupTx runs one group's transaction. A slow call's own failure is
// left in its err; the error returned is the group's.
func (s *Store) runGroupTx(calls []*groupCall) error {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	for _, c := range calls {
		c.err, c.alone = nil, false
		if c.quick != nil {
			c.quick.ok = false
		}
	}
	slow := false
	for _, c := range calls {
		slow = slow || c.quick == nil
	}
	if !slow {
		return s.runQuickGroup(ctx, calls)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Quick calls first: their batch takes its task locks before any
		// other call's, and all are taken before the audit head's.
		events, err := runQuick(ctx, tx, calls)
		if err != nil {
			return err
		}
		for i, c := range calls {
			if c.quick != nil {
				continue
			}
			// Each call its own savepoint: undoing one never reaches into
			// another's work.
			sp := fmt.Sprintf("g%d", i)
			d := &detached{Tx: tx, ctx: ctx, pending: true, name: sp}
			gt := &groupTx{txn: &txn{tx: d, nowait: true}}
			err := c.fn(gt)
			if err == nil && tx.Conn().PgConn().TxStatus() == 'E' {
				// A statement failed and fn went on as if it had not: what
				// InTx would have refused at commit is this call's failure.
				err = errors.New("postgres: a statement failed inside the transaction")
			}
			if err != nil {
				c.err, c.alone = translate(err), errors.Is(err, errLockBusy)
				if d.pending {
					continue // no statement ran: nothing to undo
				}
				if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+sp); rerr != nil {
					return rerr
				}
				continue
			}
			events = append(events, gt.events...)
		}
		return (&txn{tx: tx}).AppendAudit(ctx, events...)
	})
}

// detached runs every statement of a group function on the group's
// context, whatever context the function passes: one caller giving up
// (a client gone) must not cancel a statement, which would end the
// connection and the transaction of the whole group. It also opens the
// function's savepoint lazily, sent with its first statement in one round
// trip.
type detached struct {
	pgx.Tx
	ctx     context.Context
	pending bool   // the savepoint is not yet sent
	name    string // the savepoint's
}

// savepoint sends the savepoint on its own, before a statement that
// cannot carry it.
func (d *detached) savepoint() error {
	if !d.pending {
		return nil
	}
	d.pending = false
	_, err := d.Tx.Exec(d.ctx, "SAVEPOINT "+d.name)
	return err
}

// withSavepoint sends the pending savepoint and sql in one batch and
// returns the batch positioned on sql's result (the caller closes it).
func (d *detached) withSavepoint(sql string, args []any) (pgx.BatchResults, error) {
	d.pending = false
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + d.name)
	b.Queue(sql, args...)
	br := d.Tx.SendBatch(d.ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

func (d *detached) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if !d.pending {
		return d.Tx.Exec(d.ctx, sql, args...)
	}
	br, err := d.withSavepoint(sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (d *detached) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	if !d.pending {
		return d.Tx.QueryRow(d.ctx, sql, args...)
	}
	br, err := d.withSavepoint(sql, args)
	if err != nil {
		return errRow{err}
	}
	return &batchRow{Row: br.QueryRow(), br: br}
}

// batchRow is a row read from a batch, which it closes once scanned.
type batchRow struct {
	pgx.Row
	br pgx.BatchResults
}

func (r *batchRow) Scan(dest ...any) error {
	err := r.Row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (d *detached) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := d.savepoint(); err != nil {
		return nil, err
	}
	return d.Tx.Query(d.ctx, sql, args...)
}

func (d *detached) SendBatch(_ context.Context, b *pgx.Batch) pgx.BatchResults {
	// A savepoint that failed has aborted the transaction: the batch then
	// fails with that, and the function with it.
	_ = d.savepoint()
	return d.Tx.SendBatch(d.ctx, b)
}

func (d *detached) CopyFrom(_ context.Context, t pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if err := d.savepoint(); err != nil {
		return 0, err
	}
	return d.Tx.CopyFrom(d.ctx, t, cols, src)
}

func (d *detached) Prepare(_ context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := d.savepoint(); err != nil {
		return nil, err
	}
	return d.Tx.Prepare(d.ctx, name, sql)
}
