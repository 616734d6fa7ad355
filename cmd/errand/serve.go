package main

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/logbuf"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/issuer/vault"
	"github.com/errandhq/errand/notify"
	"github.com/errandhq/errand/policy"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/signin"
	"github.com/errandhq/errand/store/postgres"
	"github.com/errandhq/errand/store/sqlite"
)

func newServe() *cobra.Command {
	var (
		cfgPath, listenAddr string
		noMigrate           bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run Errand with the configured issuers, on PostgreSQL (or SQLite for one node)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if listenAddr != "" {
				cfg.Listen = listenAddr
			}
			// Lines reach stderr in batches, at most logFlush late: one
			// write per request cost a mint measurable CPU.
			lines := logbuf.New(cmd.ErrOrStderr(), logFlush, 256<<10)
			defer lines.Close()
			log := slog.New(slog.NewJSONHandler(lines, nil))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, log, !noMigrate, nil)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "errand.yaml", "path to errand.yaml")
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "refuse to start on a pending schema instead of migrating")
	cmd.Flags().StringVar(&listenAddr, "listen", os.Getenv("ERRAND_LISTEN"),
		"address to listen on, in place of the config's listen (env ERRAND_LISTEN; 0.0.0.0:8080 in the container image)")
	return cmd
}

// logFlush is how long serve's log lines may wait to be written together
// (a variable for the test of the exit's flush).
var logFlush = 10 * time.Millisecond

func newMigrate() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			st, err := openStore(cmd.Context(), cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := st.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %d migration(s)\n", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "errand.yaml", "path to errand.yaml")
	return cmd
}

// backend is a store Errand can run on.
type backend interface {
	broker.Store
	broker.KeyStore
	broker.Outbox
	broker.Deliveries
	Migrate(ctx context.Context) (int, error)
	Close()
}

type sqliteBackend struct{ *sqlite.Store }

func (b sqliteBackend) Close() { _ = b.Store.Close() }

type postgresBackend struct{ *postgres.Store }

// openStore opens PostgreSQL for postgres:// URLs and SQLite for sqlite://.
func openStore(ctx context.Context, url string) (backend, error) {
	if path, ok := sqlite.PathFromURL(url); ok {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, err
		}
		return sqliteBackend{st}, nil
	}
	st, err := postgres.Open(ctx, postgres.Config{URL: url})
	if err != nil {
		return nil, err
	}
	return postgresBackend{st}, nil
}

// serve opens the configured store and listener and runs until ctx ends.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, migrate bool, ready chan<- string) error {
	tuneGC(log)
	st, err := openStore(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := prepareSchema(ctx, st, migrate); err != nil {
		return err
	}
	ln, err := listen(cfg, log)
	if err != nil {
		return err
	}
	a, err := build(ctx, cfg, st, log)
	if err != nil {
		ln.Close()
		return err
	}
	return run(ctx, ln, a.handler(), a, log, ready)
}

func prepareSchema(ctx context.Context, st backend, migrate bool) error {
	if migrate {
		_, err := st.Migrate(ctx)
		return err
	}
	if pg, ok := st.(postgresBackend); ok {
		if err := pg.CheckSchema(ctx); err != nil {
			return err
		}
		return pg.CheckPrivileges(ctx)
	}
	return errors.New("--no-migrate is only supported on PostgreSQL")
}

// run serves h on ln and runs the workers until ctx ends or one of them
// fails, then shuts down gracefully: the listener stops accepting,
// in-flight requests finish, the workers return (any transaction they
// were in commits or rolls back as a whole).
func run(ctx context.Context, ln net.Listener, h http.Handler, a *app, log *slog.Logger, ready chan<- string) error {
	srv := httpapi.NewHTTPServer(ln.Addr().String(), h)
	// The server's own complaints (TLS handshakes of scanners, …) go to
	// the structured log, at debug.
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	srv.RegisterOnShutdown(a.api.StopStreams)
	workers := a.workers
	g, gctx := errgroup.WithContext(ctx)
	workCtx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	for _, w := range workers {
		g.Go(func() error { return w(workCtx) })
	}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := srv.Shutdown(shutCtx)
		stopWorkers()
		return err
	})
	log.Info("errand serving", "listen", ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	return g.Wait()
}

// app is a wired Errand: its HTTP API and its background workers.
type app struct {
	api     *httpapi.Server
	svc     *broker.Service
	workers []func(context.Context) error
	// signin signs people in to the pages (signin.go).
	signin *signin.Manager
	// pages are the approval pages under /ui/ (webpages.go).
	pages http.Handler
}

// build assembles the broker, its adapters and its workers over a store.
func build(ctx context.Context, cfg *config.Config, st backend, log *slog.Logger) (*app, error) {
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
		Issuer: cfg.PublicURL, Keys: st, Secret: []byte(cfg.SystemSecret), Alg: cfg.SigningAlg, Logger: log,
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
	backends := map[string]revocation.Backend{}
	bcfg := broker.Config{
		Store: st, Tokens: tokens, Catalog: catalog, UserIssuers: cfg.UserIssuers(), AgentIssuers: cfg.AgentIssuers(),
		TokenTTLMax: cfg.Limits.TokenTTLMax, TaskTTLMax: cfg.Limits.TaskTTLMax,
		MaxPendingPerAgent: cfg.Limits.PendingTasksPerAgent,
		CredentialsPerTask: cfg.Limits.CredentialsPerTask, ResourcesPerTask: cfg.Limits.ResourcesPerTask,
		StepUpTTL: cfg.Limits.StepUpTTL, IDJAGTargets: cfg.BrokerIDJAGTargets(),
		Webhooks: cfg.BrokerWebhooks(),
	}
	var engine *policy.Engine
	if len(cfg.Policies) > 0 {
		if engine, err = policy.NewEngine(cfg.PolicySource(), cfg.PolicyCheck(catalog)); err != nil {
			return nil, err
		}
		bcfg.Policy = engine
		log.Info("policies loaded", "engine", engine.Current().Engine(), "policies", engine.Current().Len(), "files", len(engine.Current().Files()))
	}
	if v := cfg.Vault; v != nil {
		vi, err := vault.New(ctx, vault.Config{
			Address: v.Address, Roles: cfg.SecretRoles(), Secret: []byte(cfg.SystemSecret), PolicyPrefix: v.PolicyPrefix,
			Auth: vault.Auth{Method: v.Auth.Method, TokenFile: v.Auth.TokenFile, RoleID: v.Auth.RoleID, SecretIDFile: v.Auth.SecretIDFile},
		})
		if err != nil {
			return nil, err
		}
		bcfg.Secrets, bcfg.SecretRoles, bcfg.BackendKinds = vi, cfg.SecretRoles(), []string{broker.KindVaultToken}
		backends[broker.KindVaultToken] = vi
	}
	// ID-JAG targets with a push endpoint hear of each revoked grant (SET).
	if push := revocation.NewEventPush(st, tokens, bcfg.IDJAGTargets); push != nil {
		backends[broker.KindIDJAG] = push
	}
	hub := &revocation.Hub{Poll: time.Second}
	if l, ok := st.(interface {
		Listen(context.Context, func()) error
	}); ok {
		hub.Listen = l.Listen
	} else {
		hub.Poll = 250 * time.Millisecond
	}
	// With PostgreSQL (replicas), introspection of an active token is
	// answered from memory, kept exact across replicas (StatusCache).
	var cache *revocation.StatusCache
	if as, ok := st.(revocation.AckStore); ok && hub.Listen != nil {
		var id [8]byte
		if _, err := rand.Read(id[:]); err != nil {
			return nil, err
		}
		cache = &revocation.StatusCache{Store: as, Replica: hex.EncodeToString(id[:]), Wake: hub, Logger: log}
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
	if pc, ok := st.(pendingCounter); ok {
		if err := reg.Register(newPendingCollector(pc, log)); err != nil {
			return nil, err
		}
	}
	if cache != nil {
		if cache.Lag, err = newRevocationLag(reg); err != nil {
			return nil, err
		}
	}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "errand_quick_mints_total", Help: "Mints recorded by the fast path (a snapshot of the task re-checked by one insert).",
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
	feed := &revocation.Feed{Store: st, Wake: hub, Logger: log}
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
	outbox := &revocation.Outbox{Store: st, Service: svc, Backends: backends, Logger: log, Metrics: om}
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
	if vi, ok := backends[broker.KindVaultToken].(*vault.Issuer); ok {
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
		workers = append(workers, anchor(st, every, log, am))
	}
	if engine != nil {
		workers = append(workers, reloadOnHangup(engine, log))
	}
	// Notifications: one loop per webhook, off the request path.
	if targets, err := cfg.WebhookTargets(); err != nil {
		return nil, err
	} else if len(targets) > 0 {
		nm, err := notify.NewMetrics(reg, targets)
		if err != nil {
			return nil, err
		}
		nw := &notify.Worker{Store: st, Failures: svc, Targets: targets, PublicURL: cfg.PublicURL,
			GiveUpAfter: time.Duration(cfg.Notifications.GiveUpAfter), Logger: log, Metrics: nm}
		workers = append(workers, nw.Run)
		for _, t := range targets {
			log.Info("webhook configured", "webhook", t.Key(), "host", t.URL.Host, "format", t.Format, "events", t.Events)
		}
	}
	sm, err := newSignin(cfg, st, verifier, svc, api, log)
	if err != nil {
		return nil, err
	}
	workers = append(workers, sm.Run)
	pages, err := newPages(cfg, svc, api, sm, log)
	if err != nil {
		return nil, err
	}
	return &app{api: api, svc: svc, workers: workers, signin: sm, pages: pages}, nil
}

// KeyReloadEvery is how soon a replica picks up another's key change (and
// stops accepting a retired key); KeyMaintainEvery how often it checks
// whether a rotation or retirement is due.
var (
	KeyReloadEvery   = 10 * time.Second
	KeyMaintainEvery = time.Minute
)

// reloadOnHangup reads the policy files again on every SIGHUP. A set that
// does not load (syntax, schema) is refused and the running set stays.
// It subscribes at once, before serving starts, so that a SIGHUP never
// meets the default action (which ends the process).
func reloadOnHangup(e *policy.Engine, log *slog.Logger) func(context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return func(ctx context.Context) error {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				if set, err := e.Reload(); err != nil {
					log.Error("policy reload refused; the running policies stay in force", "err", err)
				} else {
					log.Info("policies reloaded", "engine", set.Engine(), "policies", set.Len(), "files", len(set.Files()))
				}
			}
		}
	}
}

// anchor logs the audit chain's head every period: an external log that
// keeps these lines can later prove that no event before them was
// rewritten, even by someone able to recompute every hash after it. m,
// when not nil, records each anchor's time.
func anchor(st broker.Reader, every time.Duration, log *slog.Logger, m *anchorMetrics) func(context.Context) error {
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
