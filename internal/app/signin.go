package app

import (
	"log/slog"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/signin"
)

// newSignin is the sign-in of people to the pages: sessions in the
// backend's database, the user issuers with a client_id as providers, ID
// tokens verified by verifier (the bearer tokens' verifier), refusals
// audited as the API's are (svc for a verified person, api's summaries
// for callers with no verified identity).
func newSignin(cfg *config.Config, sessions signin.Store, verifier signin.TokenVerifier, svc *broker.Service, api *httpapi.Server, log *slog.Logger) (*signin.Manager, error) {
	providers, err := cfg.SigninProviders()
	if err != nil {
		return nil, err
	}
	return signin.New(signin.Config{
		Store: sessions, PublicURL: cfg.PublicURL, Verifier: verifier, Providers: providers,
		IdleTimeout: time.Duration(cfg.Sessions.IdleTimeout), AbsoluteTimeout: time.Duration(cfg.Sessions.AbsoluteTimeout),
		Audit: svc, Refuser: api, LimitAddress: api.ThrottleAddress, Logger: log,
	})
}
