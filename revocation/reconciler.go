package revocation

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
)

// VaultTokens is what the reconciler needs of Vault (issuer/vault.Issuer).
type VaultTokens interface {
	// TaskTokens lists this Errand's task tokens that live in Vault now;
	// it fails unless the listing is complete.
	TaskTokens(ctx context.Context) ([]broker.VaultTaskToken, error)
	// Backend revokes a task token by its accessor (item.Ref) and returns
	// nil only once Vault confirms.
	Backend
}

// Reconciler finds the per-task Vault tokens Errand created but never
// recorded (a replica killed between the Vault call and the commit) and
// has them revoked, with an alarm (backend.orphan_found and
// errand_vault_orphans_total); it also resolves the intents that created
// nothing. Every replica may run it: the database serialises their work.
type Reconciler struct {
	Service *broker.Service
	Vault   VaultTokens
	// Interval between reconciliations; default 1 min.
	Interval time.Duration
	// Grace is how long a pending intent is left to its own request;
	// default 2 min. It must exceed the Vault client's timeout (10 s).
	Grace   time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
	Metrics *ReconcilerMetrics
}

// ReconcilerMetrics are the reconciler's Prometheus metrics.
type ReconcilerMetrics struct {
	Runs      *prometheus.CounterVec // by result
	Orphans   *prometheus.CounterVec // by kind: "orphan" (queued) or "unowned" (revoked directly)
	Abandoned prometheus.Counter
}

// NewReconcilerMetrics registers the reconciler's metrics.
func NewReconcilerMetrics(reg prometheus.Registerer) (*ReconcilerMetrics, error) {
	m := &ReconcilerMetrics{
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_vault_reconcile_runs_total", Help: "Vault reconciliations by result.",
		}, []string{"result"}),
		Orphans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_vault_orphans_total", Help: "Vault task tokens Errand created but never recorded, found by the reconciler (an alarm; the target is 0).",
		}, []string{"kind"}),
		Abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_vault_intents_abandoned_total", Help: "Pending Vault token intents of which no token lives in Vault.",
		}),
	}
	for _, c := range []prometheus.Collector{m.Runs, m.Orphans, m.Abandoned} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (r *Reconciler) defaults() {
	if r.Interval <= 0 {
		r.Interval = time.Minute
	}
	if r.Grace <= 0 {
		r.Grace = 2 * time.Minute
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
}

// Run reconciles every Interval until ctx ends; a failed round is logged
// and tried again at the next.
func (r *Reconciler) Run(ctx context.Context) error {
	r.defaults()
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.Logger.Warn("vault reconciliation failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconcile runs one round: list the task tokens in Vault, hold them
// against the records, revoke the unowned ones directly.
func (r *Reconciler) Reconcile(ctx context.Context) (broker.VaultReconciliation, error) {
	r.defaults()
	start := r.Now()
	live, err := r.Vault.TaskTokens(ctx)
	if err != nil {
		r.run("error")
		return broker.VaultReconciliation{}, err
	}
	// The listing's own duration is added to the grace: an intent older
	// than that which created a token would have found it in the listing.
	res, err := r.Service.ReconcileVault(ctx, live, r.Grace+r.Now().Sub(start))
	for _, o := range res.Orphans {
		r.orphan("orphan")
		r.Logger.Error("vault task token created but never recorded: recorded and queued for revocation",
			"task_id", o.TaskID, "accessor_sha256", broker.HashID(o.Accessor))
	}
	if r.Metrics != nil && res.Abandoned > 0 {
		r.Metrics.Abandoned.Add(float64(res.Abandoned))
	}
	for _, u := range res.Unowned {
		r.orphan("unowned")
		if rerr := r.Vault.Revoke(ctx, broker.OutboxItem{Kind: broker.KindVaultToken, Ref: u.Accessor}); rerr != nil {
			r.Logger.Error("vault task token of a task unknown to this database: revocation failed, retried next round",
				"accessor_sha256", broker.HashID(u.Accessor), "err", rerr)
			continue
		}
		if aerr := r.Service.RecordUnownedRevoked(ctx, u); aerr != nil {
			r.Logger.Warn("vault reconciliation: cannot record a revocation", "err", aerr)
		}
		r.Logger.Error("vault task token of a task unknown to this database: revoked",
			"accessor_sha256", broker.HashID(u.Accessor))
	}
	if err != nil {
		r.run("error")
		return res, err
	}
	r.run("ok")
	return res, nil
}

func (r *Reconciler) run(result string) {
	if r.Metrics != nil {
		r.Metrics.Runs.WithLabelValues(result).Inc()
	}
}

func (r *Reconciler) orphan(kind string) {
	if r.Metrics != nil {
		r.Metrics.Orphans.WithLabelValues(kind).Inc()
	}
}
