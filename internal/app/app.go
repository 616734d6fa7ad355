// Package app wires Errand: from a loaded configuration and an opened
// backend it builds the broker, its adapters (HTTP API, sign-in, pages,
// issuers), its metrics and its background workers. errand serve, errand
// dev and the test harness all build Errand here, so that a component
// added once runs everywhere; what belongs to a process (listener,
// signals, logging, the schema check at start) stays with the command.
package app

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/issuer/vault"
	"github.com/errandhq/errand/notify"
	"github.com/errandhq/errand/policy"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/signin"
)

// Options are what the caller decides beyond the configuration.
type Options struct {
	// Now is the broker's clock (default time.Now).
	Now func() time.Time
}

// App is a wired Errand.
type App struct {
	// API is the REST API; its StopStreams ends the revocation streams
	// at shutdown.
	API     *httpapi.Server
	Service *broker.Service
	Tokens  *jwt.Issuer
	// SignIn signs people in to the pages, which Pages serves under /ui/.
	SignIn *signin.Manager
	Pages  http.Handler
	// Registry holds the metrics the API serves.
	Registry *prometheus.Registry
	// Policies is the policy engine, nil without policies: the process
	// reloads it (on SIGHUP for errand serve).
	Policies *policy.Engine
	// Workers are the background loops to run beside serving, each until
	// its context ends; the first to fail should stop the others.
	Workers []func(context.Context) error

	verifier *identity.Verifier
}

// KeyReloadEvery is how soon a replica picks up another's key change (and
// stops accepting a retired key); KeyMaintainEvery how often it checks
// whether a rotation or retirement is due.
var (
	KeyReloadEvery   = 10 * time.Second
	KeyMaintainEvery = time.Minute
)

// New assembles the broker, its adapters and its workers over b, for cfg
// as config.Load (or Validate) left it. Nothing runs until the caller
// runs Workers and serves Handler.
func New(ctx context.Context, cfg *config.Config, b *Backend, log *slog.Logger, o Options) (*App, error) {
	catalog, err := cfg.Catalog()
	if err != nil {
		return nil, err
	}
	for _, a := range cfg.Audiences {
		if len(a.Introspectors) == 0 && a.AnyIntrospector {
			log.Warn("audience opts in to any_introspector: every resource server may introspect its tokens and read their revocations", "audience", a.URL)
		} else if len(a.Introspectors) == 0 {
			log.Info("audience has no introspectors: its tokens answer active:false to every resource server", "audience", a.URL)
		}
	}
	tokens, err := jwt.New(ctx, jwt.Config{
		Issuer: cfg.PublicURL, Keys: b.Keys, Secret: []byte(cfg.SystemSecret), Alg: cfg.SigningAlg, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	// A next key is published from the start, and the policy applied.
	if _, err := tokens.Maintain(ctx, cfg.KeyPolicy()); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	verifier, err := identity.New(cfg.IdentityConfig())
	if err != nil {
		return nil, err
	}
	backends := map[broker.CredentialKind]revocation.Backend{}
	bcfg := broker.Config{
		Store: b.Store, Tokens: tokens, Catalog: catalog, UserIssuers: cfg.UserIssuers(), AgentIssuers: cfg.AgentIssuers(),
		TokenTTLMax: cfg.Limits.TokenTTLMax, TaskTTLMax: cfg.Limits.TaskTTLMax,
		MaxPendingPerAgent: cfg.Limits.PendingTasksPerAgent,
		CredentialsPerTask: cfg.Limits.CredentialsPerTask, ResourcesPerTask: cfg.Limits.ResourcesPerTask,
		StepUpTTL: cfg.Limits.StepUpTTL, IDJAGTargets: cfg.BrokerIDJAGTargets(),
		Webhooks: cfg.BrokerWebhooks(), Now: o.Now,
	}
	var engine *policy.Engine
	if len(cfg.Policies) > 0 {
		if engine, err = policy.NewEngine(cfg.PolicySource(), cfg.PolicyCheck(catalog)); err != nil {
			return nil, err
		}
		bcfg.Policy = engine
		log.Info("policies loaded", "engine", engine.Current().Engine(), "policies", engine.Current().Len(), "files", len(engine.Current().Files()))
	}
	var vi *vault.Issuer
	if v := cfg.Vault; v != nil {
		vi, err = vault.New(ctx, vault.Config{
			Address: v.Address, Roles: cfg.SecretRoles(), Secret: []byte(cfg.SystemSecret), PolicyPrefix: v.PolicyPrefix,
			Auth: vault.Auth{Method: v.Auth.Method, TokenFile: v.Auth.TokenFile, RoleID: v.Auth.RoleID, SecretIDFile: v.Auth.SecretIDFile},
		})
		if err != nil {
			return nil, err
		}
		bcfg.Secrets, bcfg.SecretRoles, bcfg.BackendKinds = vi, cfg.SecretRoles(), []broker.CredentialKind{broker.KindVaultToken}
		backends[broker.KindVaultToken] = vi
	}
	// ID-JAG targets with a push endpoint hear of each revoked grant (SET).
	if push := revocation.NewEventPush(b.Store, tokens, bcfg.IDJAGTargets); push != nil {
		backends[broker.KindIDJAG] = push
	}
	hub := &revocation.Hub{Poll: time.Second}
	if b.Listen != nil {
		hub.Listen = b.Listen
	} else {
		hub.Poll = 250 * time.Millisecond
	}
	// With PostgreSQL (replicas), introspection of an active token is
	// answered from memory, kept exact across replicas (StatusCache).
	var cache *revocation.StatusCache
	if b.Acks != nil && hub.Listen != nil {
		var id [8]byte
		if _, err := rand.Read(id[:]); err != nil {
			return nil, err
		}
		cache = &revocation.StatusCache{Store: b.Acks, Replica: hex.EncodeToString(id[:]), Wake: hub, Logger: log}
		bcfg.Cache = cache
	}
	svc, err := broker.NewService(bcfg)
	if err != nil {
		return nil, err
	}
	proxies, err := cfg.Proxies()
	if err != nil {
		return nil, err
	}
	cursorKey, err := hkdf.Key(sha256.New, []byte(cfg.SystemSecret), nil, "errand cursor v1", 32)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	if b.Pending != nil {
		if err := reg.Register(newPendingCollector(b.Pending, log)); err != nil {
			return nil, err
		}
	}
	if cache != nil {
		if cache.Lag, err = newRevocationLag(reg); err != nil {
			return nil, err
		}
	}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "errand_quick_mints_total", Help: "Mints recorded on a snapshot of their task (its version re-checked by one insert).",
	}, func() float64 { return float64(svc.QuickMints()) })); err != nil {
		return nil, err
	}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "errand_signing_keys_refused_total", Help: "Stored signing keys refused as not the key their row claims (tampered with); alert on any.",
	}, func() float64 { return float64(tokens.RefusedKeys()) })); err != nil {
		return nil, err
	}
	if cache != nil {
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "errand_introspection_cache_hits_total", Help: "Introspections of active tokens answered from memory.",
		}, func() float64 { return float64(cache.Hits()) })); err != nil {
			return nil, err
		}
	}
	// One reader of the revocation feed for every stream of the replica (R03).
	feed := &revocation.Feed{Store: b.Store, Wake: hub, Logger: log}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "errand_revocation_feed_reads_total", Help: "Reads of the revocation feed from the database by the replica's feed reader.",
	}, func() float64 { return float64(feed.Reads()) })); err != nil {
		return nil, err
	}
	api, err := httpapi.New(httpapi.Config{
		Service: svc, Auth: verifier, PublicURL: cfg.PublicURL, JWKS: tokens.JWKS,
		UserIssuers: cfg.UserIssuers(), CursorKey: cursorKey, Logger: log, Registry: reg, Feed: feed,
		Streams:        httpapi.StreamLimits{PerPrincipal: cfg.Limits.StreamsPerPrincipal, PerReplica: cfg.Limits.StreamsPerReplica},
		DPoPNonceEvery: cfg.DPoP.NonceEvery,
		RateLimits: httpapi.RateLimits{
			PerPrincipal: rate.Limit(cfg.Limits.PrincipalRPS), PerAddress: addressRPS(cfg.Limits),
			TrustedProxies: proxies,
		},
	})
	if err != nil {
		return nil, err
	}
	om, err := revocation.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	sweeper := &revocation.Sweeper{Service: svc, Logger: log}
	outbox := &revocation.Outbox{Store: b.Outbox, Service: svc, Backends: backends, Logger: log, Metrics: om}
	keyWorker := func(ctx context.Context) error {
		return tokens.Run(ctx, cfg.KeyPolicy(), KeyReloadEvery, KeyMaintainEvery, log)
	}
	workers := []func(context.Context) error{sweeper.Run, outbox.Run, hub.Run, feed.Run, keyWorker}
	// Refusals of callers with no verified identity are chained as a
	// summary per source every minute, and once more at shutdown (H03).
	workers = append(workers, api.RunRefusalSummaries)
	if cache != nil {
		workers = append(workers, cache.Run)
	}
	if vi != nil {
		workers = append(workers, vi.Run)
		rm, err := revocation.NewReconcilerMetrics(reg)
		if err != nil {
			return nil, err
		}
		rec := &revocation.Reconciler{Service: svc, Vault: vi, Interval: cfg.Vault.ReconcileInterval, Logger: log, Metrics: rm}
		workers = append(workers, rec.Run)
	}
	if every := cfg.AnchorInterval(); every > 0 {
		am, err := newAnchorMetrics(reg, every)
		if err != nil {
			return nil, err
		}
		workers = append(workers, anchorWith(b.Store, every, log, am))
	}
	// Notifications: one loop per webhook, off the request path.
	if targets, err := cfg.WebhookTargets(); err != nil {
		return nil, err
	} else if len(targets) > 0 {
		nm, err := notify.NewMetrics(reg, targets)
		if err != nil {
			return nil, err
		}
		nw := &notify.Worker{Store: b.Deliveries, Failures: svc, Targets: targets, PublicURL: cfg.PublicURL,
			GiveUpAfter: time.Duration(cfg.Notifications.GiveUpAfter), Logger: log, Metrics: nm}
		workers = append(workers, nw.Run)
		for _, t := range targets {
			log.Info("webhook configured", "webhook", t.Key(), "host", t.URL.Host, "format", t.Format, "events", t.Events)
		}
	}
	sm, err := newSignin(cfg, b.SignIn, verifier, svc, api, log)
	if err != nil {
		return nil, err
	}
	workers = append(workers, sm.Run)
	pages, err := newPages(cfg, svc, api, sm, log)
	if err != nil {
		return nil, err
	}
	return &App{
		API: api, Service: svc, Tokens: tokens, SignIn: sm, Pages: pages, Registry: reg,
		Policies: engine, Workers: workers, verifier: verifier,
	}, nil
}

// Handler is what a wired Errand serves: the sign-in's routes, the pages
// under /ui/, and the API for everything else.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	h := a.SignIn.Handler()
	for _, p := range a.SignIn.Routes() {
		mux.Handle(p, h)
	}
	mux.Handle("/ui/", a.Pages)
	mux.Handle("/", a.API)
	return mux
}

// Close stops what the app holds beside its workers (the identity
// verifier's bundle sources); call it once serving and the workers ended.
func (a *App) Close() { a.verifier.Close() }

// Anchor logs the audit chain's head every period: an external log that
// keeps these lines can later prove that no event before them was
// rewritten, even by someone able to recompute every hash after it.
func Anchor(st broker.Reader, every time.Duration, log *slog.Logger) func(context.Context) error {
	return anchorWith(st, every, log, nil)
}

// anchorWith is Anchor that also records each anchor's time in m.
func anchorWith(st broker.Reader, every time.Duration, log *slog.Logger, m *anchorMetrics) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if seq, hash, err := st.AuditHead(ctx); err == nil {
				log.Info("audit anchor", "seq", seq, "hash", hash)
				if m != nil {
					m.last.SetToCurrentTime()
				}
			} else if ctx.Err() == nil {
				log.Warn("audit anchor: cannot read the chain head", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}

// addressRPS is the per-address limit: off (a front proxy limits), the
// configured rate, or 0 for the default.
func addressRPS(l config.Limits) rate.Limit {
	if l.AddressOff {
		return rate.Inf
	}
	return rate.Limit(l.AddressRPS)
}
