package broker

import (
	"sync"
	"time"
)

// QuickMints counts the mints recorded on a snapshot (Mint; the others
// took the locked branch), for the metrics.
func (s *Service) QuickMints() uint64 { return s.quickMints.Load() }

// maxSnaps bounds the task snapshots a replica keeps for Mint's snapshot branch.
const maxSnaps = 4096

// taskSnaps are the tasks as Mint's locked branch last read them. A snapshot
// may be stale: InsertCredentialIfVersion re-checks its version.
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
// forward on this replica's monotonic clock before the locked branch must
// read it again.
const dbClockFresh = 10 * time.Second

// dbClock carries the database's clock, as last read, forward on the
// local monotonic clock, so that the snapshot branch decides policies and
// expiry on the same clock as the locked branch (F07) without asking for it.
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

// now is the database's clock when the local clock reads local, or false
// without a recent reading.
func (c *dbClock) now(local time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local.IsZero() {
		return time.Time{}, false
	}
	since := local.Sub(c.local)
	if since < 0 || since > dbClockFresh {
		return time.Time{}, false
	}
	return c.db.Add(since).UTC().Truncate(time.Microsecond), true
}
