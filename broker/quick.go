package broker

import (
	"context"
	"sync"
	"time"
)

// QuickIssuer is an optional ability of a Store: recording a credential
// decided against a snapshot of its task in one statement of a group
// commit, with no savepoint and no round trip of its own.
type QuickIssuer interface {
	// IssueQuick records c (its JTI, TaskID, Kind, Agent, User, Scopes
	// and Audience; a c with a JKT, false) if, under task c.TaskID's row lock, the task is still
	// at version, approved, not revoking, its agent not suspended, and it
	// lives at least a second past the database's clock truncated to the
	// second, which becomes c.IssuedAt; c.ExpiresAt is IssuedAt + ttl,
	// cut to the task's expiry (whole seconds). event gives the audit
	// event of the recorded c at the database's clock now; it is appended
	// and committed with c. false (nothing recorded) when a condition did
	// not hold.
	IssueQuick(ctx context.Context, c *Credential, version int, ttl time.Duration,
		event func(c Credential, now time.Time) AuditEvent) (bool, error)
}

// mintQuick is Mint's fast path: the checks of the slow path, taken on
// this replica's snapshot of the task and the database's clock as last
// read, then one conditional insert that re-checks, under the task's row
// lock, everything the snapshot could have changed (version, status,
// suspension, expiry). Whatever the snapshot cannot decide for certain (a
// refusal, a step-up, a budget, an idempotent retry, a changed task) goes
// to the slow path, which answers, audits and refreshes the snapshot:
// done is false and nothing was recorded.
func (s *Service) mintQuick(ctx context.Context, p Principal, id, jti string, scopes Scopes, req MintRequest) (out Minted, done bool, err error) {
	q, ok := s.store.(QuickIssuer)
	if !ok {
		return Minted{}, false, nil
	}
	t, ok := s.snaps.get(id)
	if !ok {
		return Minted{}, false, nil
	}
	now, ok := s.dbClock.now()
	if !ok || !p.Is(KindAgent, t.Agent) || t.Budget != (Budget{}) || t.RequireDPoP || req.JKT != "" ||
		s.mintable(t, now, scopes, req.Audience) != nil {
		return Minted{}, false, nil
	}
	tool, dataset, err := boundLabels(t, req.Tool, req.Dataset)
	if err != nil {
		return Minted{}, false, nil
	}
	d := s.decideAll(PolicyRequest{
		Operation: OpMint, TaskID: t.ID, Agent: t.Agent, User: t.User, Groups: t.UserGroups,
		Tool: tool, Dataset: dataset, Time: now,
	}, scopes, []string{req.Audience})
	if d.Effect != EffectAllow {
		return Minted{}, false, nil
	}
	ttl := s.tokMax
	if req.TTLSeconds > 0 && req.TTLSeconds < int64(ttl/time.Second) {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	c := Credential{JTI: jti, TaskID: t.ID, Kind: "jwt", Agent: t.Agent, User: t.User,
		Scopes: scopes, Audience: req.Audience}
	done, err = q.IssueQuick(ctx, &c, t.Version, ttl, func(c Credential, at time.Time) AuditEvent {
		s.dbClock.observe(at, time.Now())
		return issuedEvent(p, c, at.UTC().Truncate(time.Microsecond), tool, dataset)
	})
	if err != nil || !done {
		return Minted{}, false, err
	}
	s.quickMints.Add(1)
	if out.Token, err = s.tokens.Sign(ctx, s.names.AccessToken(t, c)); err != nil {
		return Minted{}, true, err
	}
	out.ExpiresIn, out.Credential = int64(c.ExpiresAt.Sub(c.IssuedAt)/time.Second), c
	return out, true, nil
}

// QuickMints counts the mints recorded by the fast path (the others took
// the slow one), for the metrics.
func (s *Service) QuickMints() uint64 { return s.quickMints.Load() }

// maxSnaps bounds the task snapshots a replica keeps for the fast path.
const maxSnaps = 4096

// taskSnaps are the tasks as the slow path last locked them. A snapshot
// may be stale: the fast path's insert re-checks its version.
type taskSnaps struct {
	mu sync.Mutex
	m  map[string]Task
}

func (c *taskSnaps) get(id string) (Task, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[id]
	return t, ok
}

func (c *taskSnaps) put(t Task) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]Task)
	}
	if _, ok := c.m[t.ID]; !ok && len(c.m) >= maxSnaps {
		for k := range c.m { // any one: a dropped snapshot only costs a slow mint
			delete(c.m, k)
			break
		}
	}
	c.m[t.ID] = t
}

// dbClockFresh is how long a reading of the database's clock is carried
// forward on this replica's monotonic clock before the slow path must
// read it again.
const dbClockFresh = 10 * time.Second

// dbClock carries the database's clock, as last read, forward on the
// local monotonic clock, so that the fast path decides policies and
// expiry on the same clock as the slow path (F07) without asking for it.
// The error is at most one round trip, and the insert re-checks expiry on
// the database's own clock.
type dbClock struct {
	mu    sync.Mutex
	db    time.Time // the database's clock at local
	local time.Time // with its monotonic reading
}

// observe records that the database's clock read db when the local clock
// read local.
func (c *dbClock) observe(db, local time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local.IsZero() || !local.Before(c.local) {
		c.db, c.local = db, local
	}
}

// now is the database's clock now, or false without a recent reading.
func (c *dbClock) now() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local.IsZero() {
		return time.Time{}, false
	}
	since := time.Since(c.local)
	if since < 0 || since > dbClockFresh {
		return time.Time{}, false
	}
	return c.db.Add(since).UTC().Truncate(time.Microsecond), true
}
