package revocation

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
)

// Backend revokes credentials of one kind outside Errand's own records.
type Backend interface {
	// Revoke revokes item.Ref and returns nil only once the backend has
	// confirmed it. It must be idempotent: a retry of a revocation that
	// already happened succeeds.
	Revoke(ctx context.Context, item broker.OutboxItem) error
}

// Outbox drains the outbox of backend revocations.
type Outbox struct {
	Store    broker.Outbox
	Service  *broker.Service
	Backends map[broker.CredentialKind]Backend
	// Poll is how often to look for due items; default 1 s.
	Poll time.Duration
	// Lease is how long a claimed item is hidden from other replicas while
	// its backend is called; default 1 min.
	Lease time.Duration
	// BaseDelay and MaxDelay bound the exponential backoff; defaults 1 s, 5 min.
	BaseDelay, MaxDelay time.Duration
	// AlarmAfter raises backend.revoke_failed for an item still
	// unconfirmed this long after it was queued; default 5 min.
	AlarmAfter time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Metrics    *Metrics
}

// Metrics are the outbox's Prometheus metrics.
type Metrics struct {
	Attempts *prometheus.CounterVec // by kind and result
	Alarms   *prometheus.CounterVec // by kind
}

// NewMetrics registers the outbox metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_backend_revocation_attempts_total", Help: "Backend revocation attempts by kind and result.",
		}, []string{"kind", "result"}),
		Alarms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_backend_revoke_failed_total", Help: "Backend revocations still unconfirmed after the alarm time.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.Attempts, m.Alarms} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// The counters exist at 0 from the start, so that an alert on their
	// increase sees the first alarm (a series born at 1 shows none).
	for _, kind := range []string{string(broker.KindVaultToken), string(broker.KindVaultLease), string(broker.KindIDJAG)} {
		m.Alarms.WithLabelValues(kind)
		m.Attempts.WithLabelValues(kind, "ok")
		m.Attempts.WithLabelValues(kind, "error")
	}
	return m, nil
}

func (o *Outbox) defaults() {
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Lease <= 0 {
		o.Lease = time.Minute
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = time.Second
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 5 * time.Minute
	}
	if o.AlarmAfter <= 0 {
		o.AlarmAfter = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Run drains due items until ctx ends.
func (o *Outbox) Run(ctx context.Context) error {
	o.defaults()
	t := time.NewTicker(o.Poll)
	defer t.Stop()
	for {
		for {
			n, err := o.Drain(ctx)
			if err != nil && ctx.Err() == nil {
				o.Logger.Warn("outbox drain failed", "err", err)
			}
			if n == 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Drain claims the items due now, once each, and returns how many.
func (o *Outbox) Drain(ctx context.Context) (int, error) {
	o.defaults()
	items, err := o.Store.ClaimOutbox(ctx, o.Now(), o.Lease, 10)
	if err != nil {
		return 0, err
	}
	for _, it := range items {
		o.attempt(ctx, it)
	}
	return len(items), nil
}

func (o *Outbox) attempt(ctx context.Context, it broker.OutboxItem) {
	b, ok := o.Backends[it.Kind]
	var err error
	if !ok {
		err = fmt.Errorf("no backend for credential kind %q", it.Kind)
	} else {
		// Half the lease: an attempt never outlives its claim.
		actx, cancel := context.WithTimeout(ctx, o.Lease/2)
		err = b.Revoke(actx, it)
		cancel()
	}
	if err == nil {
		o.count(string(it.Kind), "ok")
		if cerr := o.Store.CompleteOutbox(ctx, it.ID, o.Now()); cerr != nil {
			// The lease expires and the idempotent revocation runs again.
			o.Logger.Warn("outbox: cannot record a confirmed revocation", "id", it.ID, "err", cerr)
		}
		return
	}
	o.count(string(it.Kind), "error")
	next := o.Now().Add(o.backoff(it.Attempts))
	if rerr := o.Store.RetryOutbox(ctx, it.ID, it.Attempts, next, err.Error()); rerr != nil {
		o.Logger.Warn("outbox: cannot record a failed attempt", "id", it.ID, "err", rerr)
	}
	if it.AlarmedAt.IsZero() && o.Now().Sub(it.CreatedAt) >= o.AlarmAfter {
		if aerr := o.Service.RecordBackendFailure(ctx, it, err); aerr != nil {
			o.Logger.Warn("outbox: cannot raise backend.revoke_failed", "id", it.ID, "err", aerr)
			return
		}
		if o.Metrics != nil {
			o.Metrics.Alarms.WithLabelValues(string(it.Kind)).Inc()
		}
		o.Logger.Error("backend revocation still unconfirmed", "task_id", it.TaskID, "kind", it.Kind,
			"attempts", it.Attempts, "err", err)
	}
}

// backoff is capped exponential with full jitter: attempt n waits up to
// BaseDelay·2^(n-1), never more than MaxDelay.
func (o *Outbox) backoff(attempts int) time.Duration {
	d := o.BaseDelay
	for i := 1; i < attempts && d < o.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, o.MaxDelay)
	return d/2 + rand.N(d/2+1)
}

func (o *Outbox) count(kind, result string) {
	if o.Metrics != nil {
		o.Metrics.Attempts.WithLabelValues(kind, result).Inc()
	}
}
