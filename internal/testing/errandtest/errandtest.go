// Package errandtest starts a real Errand for the tests of its SDK
// packages (resource, client): Errand as errand serve wires it
// (internal/app) over a real PostgreSQL database (internal/testing/testpg), with
// real OIDC issuers for agents, users and resource servers
// (internal/testing/testoidc).
//
// A package that uses it runs testpg.Run from its TestMain.
package errandtest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/issuer/jwt"
)

// Names of the test deployment.
const (
	// IDAudience is the audience of every workload and user ID token.
	IDAudience = "errand"
	// API is the audience (resource server) tokens are minted for.
	API = "https://api.example.test"
	// Other is a second audience, for wrong-audience cases.
	Other = "https://other.example.test"
	// Group is the user group granted EngScopes.
	Group = "eng"
	// RS is the resource server's subject at the resource issuer.
	RS = "api-server"
)

// EngScopes are what the eng group may delegate.
var EngScopes = []string{"github.repo.read:acme/**", "github.pr.write:acme/**"}

// Errand is a running Errand.
type Errand struct {
	URL       string
	Server    *httptest.Server
	Service   *broker.Service
	Tokens    *jwt.Issuer
	Agents    *testoidc.Issuer
	Users     *testoidc.Issuer
	Resources *testoidc.Issuer
}

// Options tune Start.
type Options struct {
	// Now is the broker's clock (default time.Now).
	Now func() time.Time
}

// Start runs an Errand for the test, wired by internal/app as errand
// serve wires it; it stops at cleanup.
func Start(t testing.TB, o Options) *Errand {
	t.Helper()
	b := app.Postgres(testpg.Store(t))
	t.Cleanup(b.Close)
	e := &Errand{Agents: testoidc.New(t), Users: testoidc.New(t), Resources: testoidc.New(t)}
	// The server's own URL is its issuer: start the listener first.
	e.Server = httptest.NewUnstartedServer(nil)
	e.URL = "http://" + e.Server.Listener.Addr().String()
	cfg := &config.Config{
		PublicURL: e.URL, DatabaseURL: testpg.URL(t), SystemSecret: "0123456789abcdef0123456789abcdef-sdk-test",
		Issuers: []config.Issuer{
			{URL: e.Agents.URL, Audience: IDAudience, Kind: string(broker.KindAgent)},
			{URL: e.Users.URL, Audience: IDAudience, Kind: string(broker.KindUser), GroupsClaim: "groups", AuditorGroup: "auditors"},
			{URL: e.Resources.URL, Audience: IDAudience, Kind: string(broker.KindResource)},
		},
		Actions: []config.Action{
			{Name: "github.repo.read", Class: string(broker.ClassRead), Risk: string(broker.RiskLow)},
			{Name: "github.pr.write", Class: string(broker.ClassWrite), Risk: string(broker.RiskMedium)},
		},
		Audiences: []config.Audience{
			{URL: API, Introspectors: []string{e.Resources.URL + "#" + RS}},
			{URL: Other, AnyIntrospector: true},
		},
		Grants: []config.Grant{{Group: Group, Scopes: EngScopes}},
		// Tests are not throttled: no per-principal or per-address limit.
		Limits: config.Limits{PendingTasksPerAgent: 10000, PrincipalRPS: float64(rate.Inf), AddressOff: true},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	a, err := app.New(ctx, cfg, b, slog.New(slog.NewTextHandler(io.Discard, nil)), app.Options{Now: o.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	e.Service, e.Tokens = a.Service, a.Tokens
	for _, w := range a.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w(ctx) }()
	}
	e.Server.Config.Handler = a.Handler()
	e.Server.Start()
	t.Cleanup(func() { a.API.StopStreams(); e.Server.Close() })
	return e
}

// Agent is an ID token of agent sub.
func (e *Errand) Agent(t testing.TB, sub string) string {
	return e.Agents.Token(t, sub, IDAudience, nil)
}

// User is an ID token of user sub in groups.
func (e *Errand) User(t testing.TB, sub string, groups ...string) string {
	return e.Users.Token(t, sub, IDAudience, map[string]any{"groups": groups})
}

// Resource is an ID token of resource server sub.
func (e *Errand) Resource(t testing.TB, sub string) string {
	return e.Resources.Token(t, sub, IDAudience, nil)
}
