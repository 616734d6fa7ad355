// Package errandtest starts a real Errand for the tests of its SDK
// packages (resource, client): the HTTP API of httpapi over a real
// PostgreSQL database (internal/testing/testpg), with real OIDC issuers for
// agents, users and resource servers (internal/testing/testoidc), the revocation
// feed reader woken by LISTEN/NOTIFY, as errand serve wires them.
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
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/revocation"
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

// Start runs an Errand for the test; it stops at cleanup.
func Start(t testing.TB, o Options) *Errand {
	t.Helper()
	st := testpg.Store(t)
	e := &Errand{Agents: testoidc.New(t), Users: testoidc.New(t), Resources: testoidc.New(t)}
	// The server's own URL is its issuer: start the listener first.
	e.Server = httptest.NewUnstartedServer(nil)
	e.URL = "http://" + e.Server.Listener.Addr().String()
	verifier, err := identity.New(identity.Config{Self: e.URL, Issuers: []identity.Issuer{
		{URL: e.Agents.URL, Audience: IDAudience, Kind: broker.KindAgent},
		{URL: e.Users.URL, Audience: IDAudience, Kind: broker.KindUser, GroupsClaim: "groups", AuditorGroup: "auditors"},
		{URL: e.Resources.URL, Audience: IDAudience, Kind: broker.KindResource},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	e.Tokens, err = jwt.New(ctx, jwt.Config{Issuer: e.URL, Keys: st, Secret: []byte("0123456789abcdef0123456789abcdef-sdk-test")})
	if err != nil {
		t.Fatal(err)
	}
	grant, err := broker.ParseScopes(EngScopes)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := broker.NewCatalog(
		[]broker.Action{
			{Name: "github.repo.read", Class: broker.ClassRead, Risk: broker.RiskLow},
			{Name: "github.pr.write", Class: broker.ClassWrite, Risk: broker.RiskMedium},
		},
		[]broker.Audience{
			{URL: API, Introspectors: []broker.Ref{{Issuer: e.Resources.URL, Subject: RS}}},
			{URL: Other, AnyIntrospector: true},
		},
		[]broker.Grant{{Group: Group, Scopes: grant}},
		nil,
	)
	if err != nil {
		t.Fatal(err)
	}
	e.Service, err = broker.NewService(broker.Config{
		Store: st, Tokens: e.Tokens, Catalog: cat, UserIssuers: []string{e.Users.URL},
		AgentIssuers: []string{e.Agents.URL}, MaxPendingPerAgent: 10000, Now: o.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	hub := &revocation.Hub{Poll: time.Second, Listen: st.Listen}
	feed := &revocation.Feed{Store: st, Wake: hub}
	wg.Add(2)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer wg.Done(); _ = feed.Run(ctx) }()
	api, err := httpapi.New(httpapi.Config{
		Service: e.Service, Auth: verifier, PublicURL: e.URL, JWKS: e.Tokens.JWKS,
		UserIssuers: []string{e.Users.URL}, CursorKey: []byte("cursor-key-for-sdk-tests-0123456"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Feed: feed,
		RateLimits: httpapi.RateLimits{PerPrincipal: rate.Inf, PerAddress: rate.Inf},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Server.Config.Handler = api
	e.Server.Start()
	t.Cleanup(func() { api.StopStreams(); e.Server.Close() })
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
