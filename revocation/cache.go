package revocation

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/errandhq/errand/broker"
)

// AckStore is what the status cache needs of the database: the feed, and
// each replica's position in it with a heartbeat.
type AckStore interface {
	Revocations(ctx context.Context, afterSeq int64, limit int) ([]broker.Revocation, error)
	AuditHead(ctx context.Context) (int64, string, error)
	Ack(ctx context.Context, replica string, seq int64) (time.Time, error)
	Laggards(ctx context.Context, self string, seq int64, alive time.Duration) (int, error)
	DropAck(ctx context.Context, replica string) error
	PruneAcks(ctx context.Context, idle time.Duration) error
}

// Cache defaults.
const (
	DefaultAlive     = 2 * time.Second
	DefaultBeat      = 200 * time.Millisecond
	DefaultCacheSize = 100000
	// expiryMargin keeps an entry out of use this long before its expiry
	// (or its task's): near it, the database's clock decides.
	expiryMargin = 2 * time.Second
)

var _ broker.StatusCache = (*StatusCache)(nil)

// StatusCache answers introspection of active credentials from memory and
// keeps invariant 8 exact across replicas:
//
//   - it applies the revocation feed (woken by LISTEN/NOTIFY, and every
//     Beat) and records, with a heartbeat, how far it has (replica_acks);
//   - a revocation returns to its caller only once every replica whose
//     heartbeat is younger than Alive has applied the feed that far
//     (Revoked);
//   - a replica answers from memory only while its last heartbeat began
//     less than Alive/2 ago, so a replica others stopped waiting for has
//     stopped answering from memory first;
//   - a database read that started before a revocation was applied is
//     not kept (Generation), and entries near their expiry are not used.
//
// So from the moment a close (or a revocation, or a suspension) returns,
// no replica answers active for what it revoked.
type StatusCache struct {
	Store   AckStore
	Replica string
	Wake    interface{ Changed() <-chan struct{} }
	Alive   time.Duration
	Beat    time.Duration
	Max     int
	Logger  *slog.Logger
	// Lag, when set, is given each revocation's delay from its commit
	// (on the database's clock) to this cache applying it.
	Lag func(time.Duration)

	gen   atomic.Uint64
	hits  atomic.Int64
	steps int

	mu      sync.RWMutex
	entries map[string]cacheEntry
	seen    int64
	healthy time.Time     // when the last successful heartbeat began
	offset  time.Duration // database clock minus ours, at the last heartbeat
}

type cacheEntry struct {
	c broker.Credential
	t broker.Task
}

func (sc *StatusCache) alive() time.Duration {
	if sc.Alive <= 0 {
		return DefaultAlive
	}
	return sc.Alive
}

// usable reports whether the cache may answer now (mu held).
func (sc *StatusCache) usable(now time.Time) bool {
	return !sc.healthy.IsZero() && now.Sub(sc.healthy) < sc.alive()/2
}

// Lookup returns a cached active credential and its task, with the time
// the answer is for (our clock moved to the database's).
func (sc *StatusCache) Lookup(jti string) (broker.Credential, broker.Task, time.Time, bool) {
	local := time.Now()
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	if !sc.usable(local) {
		return broker.Credential{}, broker.Task{}, time.Time{}, false
	}
	e, ok := sc.entries[jti]
	if !ok {
		return broker.Credential{}, broker.Task{}, time.Time{}, false
	}
	now := local.Add(sc.offset).UTC()
	if !now.Add(expiryMargin).Before(e.c.ExpiresAt) || !now.Add(expiryMargin).Before(e.t.ExpiresAt) {
		return broker.Credential{}, broker.Task{}, time.Time{}, false
	}
	sc.hits.Add(1)
	return e.c, e.t, now, true
}

// Hits counts the answers given from memory.
func (sc *StatusCache) Hits() int64 { return sc.hits.Load() }

// Generation changes whenever a revocation is applied.
func (sc *StatusCache) Generation() uint64 { return sc.gen.Load() }

// Keep stores an active credential read from the database, unless a
// revocation was applied since the read began.
func (sc *StatusCache) Keep(gen uint64, c broker.Credential, t broker.Task) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if gen != sc.gen.Load() || !sc.usable(time.Now()) {
		return
	}
	if sc.entries == nil {
		sc.entries = map[string]cacheEntry{}
	}
	max := sc.Max
	if max <= 0 {
		max = DefaultCacheSize
	}
	if len(sc.entries) >= max {
		clear(sc.entries)
	}
	sc.entries[c.ID] = cacheEntry{c: c, t: t}
}

// drop removes credentials and advances the generation.
func (sc *StatusCache) drop(jtis []string) {
	sc.mu.Lock()
	sc.gen.Add(1)
	for _, j := range jtis {
		delete(sc.entries, j)
	}
	sc.mu.Unlock()
}

// Revoked drops the credentials here, then waits until every live replica
// has applied the feed up to seq. A replica that neither acknowledges nor
// beats within Alive is no longer waited for: by then it has stopped
// answering from memory. The caller's revocation is committed whatever
// happens here, so a client going away does not cut the wait short.
func (sc *StatusCache) Revoked(ctx context.Context, seq int64, jtis []string) error {
	sc.drop(jtis)
	deadline := time.Now().Add(sc.alive() + 500*time.Millisecond)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	wait := time.Millisecond
	for {
		n, err := sc.Store.Laggards(ctx, sc.Replica, seq, sc.alive())
		if err != nil {
			// The revocation is committed; what cannot be confirmed is
			// waited out: after Alive, a replica either applied it (it beats
			// every Beat) or stopped answering from memory.
			if sc.Logger != nil {
				sc.Logger.Warn("revocation: cannot read the replicas' positions; waiting them out", "err", err)
			}
			time.Sleep(time.Until(deadline))
			return nil
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if sc.Logger != nil {
				sc.Logger.Warn("revocation: replicas did not confirm in time; they no longer answer from memory", "replicas", n, "seq", seq)
			}
			return nil
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Run applies the feed and beats until ctx ends, then leaves the table so
// that nobody waits for a stopped replica.
func (sc *StatusCache) Run(ctx context.Context) error {
	if sc.Replica == "" {
		return errors.New("revocation: the status cache needs a replica id")
	}
	head, _, err := sc.Store.AuditHead(ctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	sc.mu.Lock()
	sc.seen = head
	sc.mu.Unlock()
	beat := sc.Beat
	if beat <= 0 {
		beat = DefaultBeat
	}
	t := time.NewTicker(beat)
	defer t.Stop()
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = sc.Store.DropAck(dctx, sc.Replica)
	}()
	for {
		var wake <-chan struct{}
		if sc.Wake != nil {
			wake = sc.Wake.Changed()
		}
		if err := sc.step(ctx); err != nil && ctx.Err() == nil && sc.Logger != nil {
			sc.Logger.Warn("revocation cache: cannot apply the feed; answering from the database", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-t.C:
		}
	}
}

// step applies the feed from the last position, then records it with a
// heartbeat. The heartbeat's start is what answers from memory are timed
// from: everything committed before it is in the feed read after it.
func (sc *StatusCache) step(ctx context.Context) error {
	start := time.Now()
	sc.mu.RLock()
	seen := sc.seen
	sc.mu.RUnlock()
	for {
		revs, err := sc.Store.Revocations(ctx, seen, 1000)
		if err != nil {
			return err
		}
		if len(revs) > 0 {
			jtis := make([]string, len(revs))
			for i, r := range revs {
				jtis[i] = r.JTI
			}
			sc.drop(jtis)
			if sc.Lag != nil {
				sc.mu.RLock()
				dbNow := time.Now().Add(sc.offset)
				sc.mu.RUnlock()
				for _, r := range revs {
					sc.Lag(dbNow.Sub(r.RevokedAt))
				}
			}
			seen = revs[len(revs)-1].Seq
		}
		if len(revs) < 1000 {
			break
		}
	}
	dbNow, err := sc.Store.Ack(ctx, sc.Replica, seen)
	if err != nil {
		return err
	}
	sc.mu.Lock()
	sc.seen, sc.healthy, sc.offset = seen, start, dbNow.Sub(time.Now())
	sc.mu.Unlock()
	// Now and then, forget replicas that crashed an hour ago or more.
	if sc.steps++; sc.steps%1000 == 1 {
		if err := sc.Store.PruneAcks(ctx, time.Hour); err != nil {
			return err
		}
	}
	return nil
}
