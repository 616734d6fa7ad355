package main

import (
	"database/sql"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/signin"
)

// newSignin is the sign-in of people to the pages: sessions in the
// store's database, the user issuers with a client_id as providers, ID
// tokens verified by verifier (the bearer tokens' verifier), refusals
// audited as the API's are (svc for a verified person, api's summaries
// for callers with no verified identity).
func newSignin(cfg *config.Config, st backend, verifier signin.TokenVerifier, svc *broker.Service, api *httpapi.Server, log *slog.Logger) (*signin.Manager, error) {
	providers, err := cfg.SigninProviders()
	if err != nil {
		return nil, err
	}
	var db *sql.DB
	switch b := st.(type) {
	case sqliteBackend:
		db = b.DB()
	case postgresBackend:
		db = stdlib.OpenDBFromPool(b.Pool())
	}
	return signin.New(signin.Config{
		Store: &signin.SQLStore{DB: db}, PublicURL: cfg.PublicURL, Verifier: verifier, Providers: providers,
		IdleTimeout: sessionsDuration(cfg.Sessions.IdleTimeout), AbsoluteTimeout: sessionsDuration(cfg.Sessions.AbsoluteTimeout),
		Audit: svc, Refuser: api, LimitAddress: api.ThrottleAddress, Logger: log,
	})
}

func sessionsDuration(d config.Duration) time.Duration { return time.Duration(d) }

// handler is what a wired Errand serves: the sign-in routes, and the API
// for everything else.
func (a *app) handler() http.Handler {
	if a.signin == nil {
		return a.api
	}
	mux := http.NewServeMux()
	h := a.signin.Handler()
	for _, p := range a.signin.Routes() {
		mux.Handle(p, h)
	}
	if a.pages != nil {
		mux.Handle("/ui/", a.pages)
	}
	mux.Handle("/", a.api)
	return mux
}
