package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
)

// DefaultRefusalSummaryEvery is how often the refusals of callers with no
// verified identity are chained as summaries.
const DefaultRefusalSummaryEvery = time.Minute

const (
	// maxTrackedRefusalKeys bounds the (source, code) pairs counted apart
	// in one period; refusals of further pairs are counted together.
	maxTrackedRefusalKeys = 10_000
	// maxNamedRefusalSources bounds the summaries of one period that name
	// their source: the sources with the most refusals are named, the
	// others are summed into one summary per code.
	maxNamedRefusalSources = 64
)

// anonRefusals counts the refusals of callers with no verified identity
// (no token, a malformed, forged, expired or foreign one). They are not
// chained one by one: anyone can send them at line rate, each would be a
// permanent row of the append-only log and a turn at its head, which every
// mint waits for (H03). Each is counted in errand_anonymous_refusals_total
// by code, and in memory by source; every period the counts become at most
// maxNamedRefusalSources + one-per-code request.refused summary events.
type anonRefusals struct {
	every   time.Duration
	counter *prometheus.CounterVec

	mu       sync.Mutex
	counts   map[anonKey]*anonCount
	overflow map[string]*anonCount // by code: pairs beyond maxTrackedRefusalKeys
}

type anonKey struct{ source, code string }

type anonCount struct {
	n           int64
	first, last time.Time
	sources     int
	uncounted   bool
}

func (c *anonCount) merge(o anonCount) {
	if c.n == 0 || o.first.Before(c.first) {
		c.first = o.first
	}
	if o.last.After(c.last) {
		c.last = o.last
	}
	c.n += o.n
	c.sources += o.sources
	c.uncounted = c.uncounted || o.uncounted
}

func newAnonRefusals(reg prometheus.Registerer, every time.Duration) (*anonRefusals, error) {
	if every <= 0 {
		every = DefaultRefusalSummaryEvery
	}
	a := &anonRefusals{
		every: every,
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_anonymous_refusals_total",
			Help: "Refusals of callers with no verified identity, by code; chained in the audit log as periodic per-source summaries.",
		}, []string{"code"}),
		counts:   map[anonKey]*anonCount{},
		overflow: map[string]*anonCount{},
	}
	return a, reg.Register(a.counter)
}

// note counts one refusal of an unidentified caller from source.
func (a *anonRefusals) note(source, code string, now time.Time) {
	a.counter.WithLabelValues(code).Inc()
	one := anonCount{n: 1, first: now, last: now}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := anonKey{source, code}
	if c, ok := a.counts[k]; ok {
		c.merge(one)
		return
	}
	if len(a.counts) < maxTrackedRefusalKeys {
		one.sources = 1
		a.counts[k] = &one
		return
	}
	one.uncounted = true
	a.overflowOf(code).merge(one)
}

func (a *anonRefusals) overflowOf(code string) *anonCount {
	c := a.overflow[code]
	if c == nil {
		c = &anonCount{}
		a.overflow[code] = c
	}
	return c
}

// take returns the period's summaries and starts a new period.
func (a *anonRefusals) take() []broker.RefusalSummary {
	a.mu.Lock()
	counts, overflow := a.counts, a.overflow
	a.counts, a.overflow = map[anonKey]*anonCount{}, map[string]*anonCount{}
	a.mu.Unlock()

	keys := make([]anonKey, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y anonKey) int {
		if c := cmp.Compare(counts[y].n, counts[x].n); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(x.source, y.source), cmp.Compare(x.code, y.code))
	})
	out := make([]broker.RefusalSummary, 0, min(len(keys), maxNamedRefusalSources)+len(overflow))
	for i, k := range keys {
		c := counts[k]
		if i < maxNamedRefusalSources {
			out = append(out, summaryOf(k.source, k.code, *c))
			continue
		}
		c.sources = 1
		if o := overflow[k.code]; o != nil {
			o.merge(*c)
		} else {
			overflow[k.code] = c
		}
	}
	codes := make([]string, 0, len(overflow))
	for code := range overflow {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	for _, code := range codes {
		out = append(out, summaryOf(broker.AnonymousSource, code, *overflow[code]))
	}
	return out
}

func summaryOf(source, code string, c anonCount) broker.RefusalSummary {
	return broker.RefusalSummary{Source: source, Sources: c.sources, SourcesUncounted: c.uncounted,
		Code: code, Count: c.n, First: c.first, Last: c.last}
}

// putBack returns summaries that could not be chained to the current
// period, so that a database outage loses no count.
func (a *anonRefusals) putBack(sums []broker.RefusalSummary) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range sums {
		c := anonCount{n: s.Count, first: s.First, last: s.Last, sources: s.Sources, uncounted: s.SourcesUncounted}
		k := anonKey{s.Source, s.Code}
		switch existing, ok := a.counts[k]; {
		case ok:
			existing.merge(c)
		case s.Source != broker.AnonymousSource && len(a.counts) < maxTrackedRefusalKeys:
			a.counts[k] = &c
		default:
			a.overflowOf(s.Code).merge(c)
		}
	}
}

// anonSource is the source an unidentified caller is counted under: the
// same client address key the per-address rate limit uses (behind a
// trusted proxy, the client's, not the proxy's).
func (s *Server) anonSource(r *http.Request) string { return s.addressKey(r) }

// FlushRefusalSummaries chains the summaries of the refusals of callers
// with no verified identity counted since the last flush. When they cannot
// be written they are kept for the next one.
func (s *Server) FlushRefusalSummaries(ctx context.Context) error {
	sums := s.anon.take()
	if err := s.svc.RecordRefusalSummaries(ctx, sums); err != nil {
		s.anon.putBack(sums)
		return err
	}
	return nil
}

// RunRefusalSummaries chains the anonymous refusal summaries every period
// (Config.RefusalSummaryEvery) until ctx ends, and a last time then, so
// that a graceful shutdown loses no count.
func (s *Server) RunRefusalSummaries(ctx context.Context) error {
	t := time.NewTicker(s.anon.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := s.FlushRefusalSummaries(fctx); err != nil {
				s.log.Warn("cannot chain the last anonymous refusal summaries", "err", err)
			}
			return nil
		case <-t.C:
			if err := s.FlushRefusalSummaries(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "cannot chain the anonymous refusal summaries; they are kept for the next period", "err", err)
			}
		}
	}
}
