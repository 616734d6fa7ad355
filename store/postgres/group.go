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

// lanes is how many groups run at once: a group's transaction spends most
// of its time waiting on round trips, so a second one keeps both the
// database and Errand busy while the first waits. A call goes to the lane
// of its key (the task), so two groups never hold rows of the same task
// and cannot deadlock on them.
const lanes = 2

// groupTimeout bounds one group's transaction.
const groupTimeout = 10 * time.Second

var _ broker.GroupStore = (*Store)(nil)

// grouper commits concurrent InGroupTx calls together (group commit): the
// first caller leads a transaction in which every queued function runs in
// its own savepoint, then commits once, with one WAL flush; calls arriving
// meanwhile form the next group. No one waits for a timer: a lone call
// commits at once, and under load the groups grow by themselves.
type grouper struct {
	mu      sync.Mutex
	queue   []*groupCall
	running bool
}

type groupCall struct {
	fn   func(broker.Tx) error
	done chan error
}

// InGroupTx runs fn like InTx, possibly in one transaction with other
// callers' functions, and returns once that transaction has committed
// (or fn's work was rolled back). fn's audit events are appended for the
// whole group at its end, after every row lock the group takes, so that
// the audit head stays the last lock of every transaction; their Seq and
// Hash are therefore not known inside fn.
func (s *Store) InGroupTx(ctx context.Context, key string, fn func(broker.Tx) error) error {
	c := &groupCall{fn: fn, done: make(chan error, 1)}
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

func (s *Store) runGroup(calls []*groupCall) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	results := make([]error, len(calls))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var events []broker.AuditEvent
		for i, c := range calls {
			// Each call its own savepoint: undoing one never reaches into
			// another's work.
			sp := fmt.Sprintf("g%d", i)
			d := &detached{Tx: tx, ctx: ctx, pending: true, name: sp}
			gt := &groupTx{txn: &txn{tx: d}}
			err := c.fn(gt)
			if err == nil && tx.Conn().PgConn().TxStatus() == 'E' {
				// A statement failed and fn went on as if it had not: what
				// InTx would have refused at commit is this call's failure.
				err = errors.New("postgres: a statement failed inside the transaction")
			}
			if err != nil {
				results[i] = translate(err)
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
	for i, c := range calls {
		if err != nil && results[i] == nil {
			// The group did not commit: nothing of this call is kept.
			results[i] = translate(err)
		}
		c.done <- results[i]
	}
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
