package httpapi

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
)

// RevocationFeed is the replica's one reader of the revocation feed
// (revocation.Feed): it reads the feed from the database once for every
// stream and keeps the newest entries in memory.
type RevocationFeed interface {
	// After returns at most limit raw entries (of every audience) after
	// position after, and the position they take the stream to; ok is
	// false when the reader does not hold everything after after: the
	// stream then reads the database itself.
	After(after int64, limit int) (revs []broker.Revocation, next int64, ok bool)
	// Floor is the position from which the reader holds every entry (ok
	// false before it started); every entry at or below it has committed.
	Floor() (floor int64, ok bool)
	// Moved returns a channel closed when the feed's head next moves.
	Moved() <-chan struct{}
	// Fresh reports whether the reader has started and read the store
	// within the last d.
	Fresh(d time.Duration) bool
}

// StreamLimits caps the revocation streams one replica holds open (R03).
// Zero fields take the defaults.
type StreamLimits struct {
	// PerPrincipal caps one resource server's open streams; default
	// DefaultStreamsPerPrincipal.
	PerPrincipal int
	// PerReplica caps every stream of the replica; default
	// DefaultStreamsPerReplica.
	PerReplica int
}

// Stream limit defaults.
const (
	DefaultStreamsPerPrincipal = 4
	DefaultStreamsPerReplica   = 2000
)

// maxCatchUps bounds the streams of a replica reading the database at
// once, those behind what the feed reader holds in memory.
const maxCatchUps = 4

// streams counts the open revocation streams against their limits.
type streams struct {
	limits StreamLimits

	mu    sync.Mutex
	total int
	by    map[string]int

	// catchUp holds a slot for each stream reading the database.
	catchUp chan struct{}

	open      prometheus.Gauge
	wakes     prometheus.Counter
	catchUps  prometheus.Counter
	delivered prometheus.Counter
}

func newStreams(reg *prometheus.Registry, l StreamLimits) (*streams, error) {
	if l.PerPrincipal <= 0 {
		l.PerPrincipal = DefaultStreamsPerPrincipal
	}
	if l.PerReplica <= 0 {
		l.PerReplica = DefaultStreamsPerReplica
	}
	ss := &streams{
		limits: l, by: map[string]int{}, catchUp: make(chan struct{}, maxCatchUps),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "errand_revocation_streams_open", Help: "Revocation streams open on this replica.",
		}),
		wakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_revocation_stream_wakes_total", Help: "Revocation streams woken because the feed's head moved.",
		}),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_revocation_stream_catchup_reads_total",
			Help: "Database reads of revocation streams behind what the feed reader holds in memory.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_revocation_stream_events_total", Help: "Revocation events sent on streams.",
		}),
	}
	for _, c := range []prometheus.Collector{ss.open, ss.wakes, ss.catchUps, ss.delivered} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return ss, nil
}

// take opens a stream for the principal key, or refuses with
// rate_limited when the principal or the replica is at its limit.
func (ss *streams) take(key string) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if n := ss.by[key]; n >= ss.limits.PerPrincipal {
		return broker.Errorf(broker.ErrRateLimited,
			"%d revocation streams are open for this resource server on this replica, the most allowed", n)
	}
	if ss.total >= ss.limits.PerReplica {
		return broker.Errorf(broker.ErrRateLimited,
			"this replica holds %d revocation streams, the most allowed; retry later", ss.total)
	}
	ss.by[key]++
	ss.total++
	ss.open.Set(float64(ss.total))
	return nil
}

// give closes a stream taken for key.
func (ss *streams) give(key string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.by[key]--; ss.by[key] <= 0 {
		delete(ss.by, key)
	}
	ss.total--
	ss.open.Set(float64(ss.total))
}

// readStore runs read holding one of the replica's catch-up slots, waiting
// for one until ctx or stop ends.
func (ss *streams) readStore(ctx context.Context, stop <-chan struct{}, read func() error) error {
	select {
	case ss.catchUp <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return context.Canceled
	}
	defer func() { <-ss.catchUp }()
	ss.catchUps.Inc()
	return read()
}

// principalKey names a principal for the stream limits.
func principalKey(p broker.Principal) string {
	return string(p.Kind) + "\x00" + p.Issuer + "\x00" + p.Subject
}
