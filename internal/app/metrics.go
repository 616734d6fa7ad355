package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pendingCollector exports errand_tasks_pending and errand_step_ups_pending
// from one database query, made at most every PendingEvery whatever the
// scrape rate; a failed query is logged and the last counts stay.
type pendingCollector struct {
	count func(ctx context.Context, now time.Time) (tasks, stepUps int64, err error)
	log   *slog.Logger

	tasks, stepUps *prometheus.Desc

	mu             sync.Mutex
	at             time.Time
	ok             bool
	nTasks, nSteps int64
}

// PendingEvery is how often the pending counts are read at most.
const PendingEvery = 5 * time.Second

func newPendingCollector(count func(ctx context.Context, now time.Time) (int64, int64, error), log *slog.Logger) *pendingCollector {
	return &pendingCollector{
		count: count, log: log,
		tasks: prometheus.NewDesc("errand_tasks_pending",
			"Tasks waiting for their user's approval (pending, not expired), across all replicas.", nil, nil),
		stepUps: prometheus.NewDesc("errand_step_ups_pending",
			"Step-up approvals waiting for their user's decision (pending, not expired), across all replicas.", nil, nil),
	}
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.tasks; ch <- c.stepUps }

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.at) >= PendingEvery {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		t, s, err := c.count(ctx, now)
		cancel()
		if err != nil {
			c.log.Warn("metrics: cannot count pending tasks and approvals", "err", err)
		} else {
			c.at, c.ok, c.nTasks, c.nSteps = now, true, t, s
		}
	}
	if c.ok {
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(c.nTasks))
		ch <- prometheus.MustNewConstMetric(c.stepUps, prometheus.GaugeValue, float64(c.nSteps))
	}
}

// anchorMetrics say when the audit chain's head was last logged as an
// anchor and how often it should be, so that an alert can tell when the
// anchors an auditor relies on stop.
type anchorMetrics struct {
	last prometheus.Gauge
}

func newAnchorMetrics(reg prometheus.Registerer, every time.Duration) (*anchorMetrics, error) {
	m := &anchorMetrics{last: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "errand_audit_anchor_timestamp_seconds", Help: "When this replica last logged an audit anchor (Unix time).",
	})}
	interval := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "errand_audit_anchor_interval_seconds", Help: "audit_anchor_every: how often an audit anchor is logged.",
	})
	interval.Set(every.Seconds())
	for _, c := range []prometheus.Collector{m.last, interval} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// newRevocationLag registers errand_revocation_lag_seconds, from a
// revocation's commit to this replica's revocation cache applying it, and
// returns the function that observes one such lag.
func newRevocationLag(reg prometheus.Registerer) (func(time.Duration), error) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "errand_revocation_lag_seconds",
		Help:    "Time from a revocation's commit to this replica applying it to its answers from memory.",
		Buckets: []float64{.005, .01, .025, .05, .1, .2, .5, 1, 2, 5, 10, 30},
	})
	if err := reg.Register(h); err != nil {
		return nil, err
	}
	return func(d time.Duration) { h.Observe(max(d, 0).Seconds()) }, nil
}
