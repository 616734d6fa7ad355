package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/store/postgres"
)

func newServe() *cobra.Command {
	var (
		cfgPath   string
		noMigrate bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run Errand on PostgreSQL with the configured issuers",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, log, !noMigrate, nil)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "errand.yaml", "path to errand.yaml")
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "refuse to start on a pending schema instead of migrating")
	return cmd
}

func newMigrate() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations and exit",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			st, err := postgres.Open(cmd.Context(), postgres.Config{URL: cfg.DatabaseURL})
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

// serve wires every part and runs until ctx ends. When ready is not nil,
// the bound address is sent on it once the listener is open.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, migrate bool, ready chan<- string) error {
	st, err := postgres.Open(ctx, postgres.Config{URL: cfg.DatabaseURL})
	if err != nil {
		return err
	}
	defer st.Close()
	if migrate {
		if _, err := st.Migrate(ctx); err != nil {
			return err
		}
	} else if err := st.CheckSchema(ctx); err != nil {
		return err
	}
	api, err := buildAPI(ctx, cfg, st, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := httpapi.NewHTTPServer(cfg.Listen, api)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("errand serving", "listen", ln.Addr().String(), "public_url", cfg.PublicURL)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// buildAPI assembles the broker and its adapters over a store.
func buildAPI(ctx context.Context, cfg *config.Config, st interface {
	broker.Store
	broker.KeyStore
}, log *slog.Logger) (*httpapi.Server, error) {
	catalog, err := cfg.Catalog()
	if err != nil {
		return nil, err
	}
	tokens, err := jwt.New(ctx, jwt.Config{
		Issuer: cfg.PublicURL, Keys: st, Secret: []byte(cfg.SystemSecret), Alg: cfg.SigningAlg,
	})
	if err != nil {
		return nil, err
	}
	verifier, err := identity.New(cfg.IdentityConfig())
	if err != nil {
		return nil, err
	}
	svc, err := broker.NewService(broker.Config{
		Store: st, Tokens: tokens, Catalog: catalog, UserIssuers: cfg.UserIssuers(),
		TokenTTLMax: cfg.Limits.TokenTTLMax, TaskTTLMax: cfg.Limits.TaskTTLMax,
	})
	if err != nil {
		return nil, err
	}
	cursorKey, err := hkdf.Key(sha256.New, []byte(cfg.SystemSecret), nil, "errand cursor v1", 32)
	if err != nil {
		return nil, err
	}
	return httpapi.New(httpapi.Config{
		Service: svc, Auth: verifier, PublicURL: cfg.PublicURL, JWKS: tokens.JWKS,
		UserIssuers: cfg.UserIssuers(), CursorKey: cursorKey, Logger: log,
	})
}
