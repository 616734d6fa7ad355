package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/logbuf"
	"github.com/errandhq/errand/policy"
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
			st, err := app.Open(cmd.Context(), cfg.DatabaseURL)
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

// serve opens the configured store and listener and runs until ctx ends.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, migrate bool, ready chan<- string) error {
	tuneGC(log)
	b, err := app.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := prepareSchema(ctx, b, migrate); err != nil {
		return err
	}
	ln, err := listen(cfg, log)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, b, log, app.Options{})
	if err != nil {
		ln.Close()
		return err
	}
	defer a.Close()
	return run(ctx, ln, a.Handler(), a, log, ready)
}

func prepareSchema(ctx context.Context, b *app.Backend, migrate bool) error {
	if migrate {
		_, err := b.Migrate(ctx)
		return err
	}
	if b.CheckSchema != nil {
		return b.CheckSchema(ctx)
	}
	return errors.New("--no-migrate is only supported on PostgreSQL")
}

// run serves h on ln and runs the workers until ctx ends or one of them
// fails, then shuts down gracefully: the listener stops accepting,
// in-flight requests finish, the workers return (any transaction they
// were in commits or rolls back as a whole).
func run(ctx context.Context, ln net.Listener, h http.Handler, a *app.App, log *slog.Logger, ready chan<- string) error {
	srv := httpapi.NewHTTPServer(ln.Addr().String(), h)
	// The server's own complaints (TLS handshakes of scanners, …) go to
	// the structured log, at debug.
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	srv.RegisterOnShutdown(a.API.StopStreams)
	workers := a.Workers
	if a.Policies != nil {
		workers = append(slices.Clip(workers), reloadOnHangup(a.Policies, log))
	}
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
