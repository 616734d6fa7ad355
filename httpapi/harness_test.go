package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/issuer/vault"
	"github.com/errandhq/errand/policy"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/store/postgres"
)

func TestMain(m *testing.M) {
	code := testpg.Run(m)
	testvault.Stop()
	os.Exit(code)
}

const (
	audience  = "errand"
	publicURL = "https://errand.test"
	apiGitHub = "https://api.github.com"
	apiStage  = "https://staging-api.example.com"
	secret    = "0123456789abcdef0123456789abcdef-test-secret"
)

// env is a running Errand over a real PostgreSQL database and three real
// OIDC issuers (agents, users, resource servers), plus one untrusted one.
type env struct {
	t         testing.TB
	bench     bool // skip the contract check on the measured path
	st        *postgres.Store
	srv       *httptest.Server
	api       *Server
	svc       *broker.Service
	tokens    *jwt.Issuer
	verifier  *identity.Verifier
	agents    *testoidc.Issuer
	users     *testoidc.Issuer
	resources *testoidc.Issuer
	untrusted *testoidc.Issuer
	vault     *vault.Issuer
	// users2 is a second trusted user issuer, only with envOptions.twoUserIssuers.
	users2 *testoidc.Issuer
	// engine holds the policies, with envOptions.policies.
	engine *policy.Engine
	// feed is the replica's revocation feed reader.
	feed *revocation.Feed
}

type envOptions struct {
	dbURL          string
	twoUserIssuers bool
	// refetchCooldown overrides the JWKS refetch cool-down (default 30 s).
	refetchCooldown time.Duration
	// limits sets the rate limits; the zero value disables them, so that
	// tests and benchmarks are not throttled by accident.
	limits RateLimits
	// maxPending caps pending tasks per agent (0: the default).
	maxPending int
	// replicaClock is this replica's own clock (default time.Now).
	replicaClock func() time.Time
	// logs, when set, receives the server's logs at debug level.
	logs io.Writer
	// introspectors binds apiStage to these resource servers (subjects).
	introspectors []string
	// closedStage leaves apiStage with no introspectors and no opt-in:
	// the default of a configured audience.
	closedStage bool
	// notifier wakes the feed reader of the revocation streams (default:
	// a revocation.Hub polling every second).
	notifier interface{ Changed() <-chan struct{} }
	// feedWindow is how many entries the feed reader keeps (0: default).
	feedWindow int
	// feedReads, when set, counts every read of the revocation feed from
	// the store, by the service and by the feed reader alike.
	feedReads *atomic.Int64
	// streams caps the revocation streams (zero: the defaults).
	streams StreamLimits
	// vault, when set, configures Vault dynamic secrets (roles task-ro and
	// task-other); vaultAddr overrides its address (a fault proxy).
	vault     *testvault.Env
	vaultAddr string
	// vaultToken is Errand's own Vault token; default a token holding
	// exactly the policy README documents (testvault.ErrandToken).
	vaultToken string
	// policies are policy file patterns (Cedar, with schema, optional;
	// Rego with policyEngine opa).
	policies     []string
	schema       string
	policyEngine string
	// budget is the configured per-task budget.
	budget broker.Budget
	// stepUpTTL bounds step-up approvals (0: the default).
	stepUpTTL time.Duration
	// dpopNonceEvery, when set, requires DPoP server nonces.
	dpopNonceEvery time.Duration
	// idjagTargets are the ID-JAG targets (none by default).
	idjagTargets []broker.IDJAGTarget
	// spiffe adds a SPIFFE trust domain as a second agent issuer, its
	// subjects restricted to spiffeSubjects.
	spiffe         *identity.SPIFFE
	spiffeSubjects []string
}

func logger(w io.Writer) *slog.Logger {
	if w == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testCatalog(t testing.TB) *broker.Catalog { return testCatalogWith(t, "", nil) }

// testCatalogClosedStage is testCatalog with apiStage left as a
// configured audience is by default: closed to every introspector.
func testCatalogClosedStage(t testing.TB) *broker.Catalog { return testCatalogWith(t, "", []string{}) }

// testCatalogWith binds apiStage's introspection to the given resource
// servers of issuer rsIssuer.
func testCatalogWith(t testing.TB, rsIssuer string, introspectors []string, extra ...broker.Audience) *broker.Catalog {
	t.Helper()
	// Unbound audiences are closed to introspection unless they opt in:
	// the tests' audiences opt in, except apiStage when it is bound.
	stage := broker.Audience{URL: apiStage, AnyIntrospector: introspectors == nil}
	for _, sub := range introspectors {
		stage.Introspectors = append(stage.Introspectors, broker.Ref{Issuer: rsIssuer, Subject: sub})
	}
	sc := func(ss ...string) broker.Scopes {
		out, err := broker.ParseScopes(ss)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	c, err := broker.NewCatalog(
		[]broker.Action{
			{Name: "github.repo.read", Class: broker.ClassRead, Risk: broker.RiskLow},
			{Name: "github.pr.write", Class: broker.ClassWrite, Risk: broker.RiskMedium},
			{Name: "aws.iam.createaccesskey", Class: broker.ClassCredential, Risk: broker.RiskHigh},
			{Name: "okta.user.update", Class: broker.ClassIdentity, Risk: broker.RiskHigh},
			{Name: "errand.token.mint", Class: broker.ClassToken, Risk: broker.RiskHigh},
			{Name: "db.orders.read", Class: broker.ClassRead, Risk: broker.RiskMedium},
		},
		append([]broker.Audience{{URL: apiGitHub, Environment: "prod", AnyIntrospector: true}, stage}, extra...),
		[]broker.Grant{
			// People may hold blocked actions; they stay ungrantable to agents.
			{Group: "eng", Scopes: sc("github.repo.read:acme/**", "github.pr.write:acme/**",
				"aws.iam.createaccesskey", "okta.user.update", "errand.token.mint", "db.orders.read:database/creds/**")},
			{Group: "interns", Scopes: sc("github.repo.read:acme/docs"), Audiences: []string{apiStage}},
			{Group: "dba", Scopes: sc("github.pr.write:acme/db"), Audiences: []string{apiGitHub}},
		},
		nil,
	)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newEnv builds the environment on the package's database (or on url when
// given, e.g. through a fault-injecting proxy).
func newEnv(t testing.TB, dbURL ...string) *env {
	t.Helper()
	o := envOptions{}
	if len(dbURL) > 0 {
		o.dbURL = dbURL[0]
	}
	return newEnvWith(t, o)
}

func newEnvWith(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t}
	if o.maxPending == 0 {
		o.maxPending = 10000
	}
	if o.limits.PerPrincipal == 0 {
		o.limits.PerPrincipal = rate.Inf
	}
	if o.limits.PerAddress == 0 {
		o.limits.PerAddress = rate.Inf
	}
	if o.dbURL != "" {
		st, err := postgres.Open(context.Background(), postgres.Config{URL: o.dbURL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		e.st = st
	} else {
		e.st = testpg.Store(t)
	}
	e.agents, e.users, e.resources, e.untrusted = testoidc.New(t), testoidc.New(t), testoidc.New(t), testoidc.New(t)
	issuers := []identity.Issuer{
		{URL: e.agents.URL, Audience: audience, Kind: broker.KindAgent},
		{URL: e.users.URL, Audience: audience, Kind: broker.KindUser, GroupsClaim: "groups", AuditorGroup: "auditors", AdminGroup: "admins"},
		{URL: e.resources.URL, Audience: audience, Kind: broker.KindResource},
	}
	userIssuers := []string{e.users.URL}
	if o.twoUserIssuers {
		e.users2 = testoidc.New(t)
		issuers = append(issuers, identity.Issuer{URL: e.users2.URL, Audience: audience, Kind: broker.KindUser, GroupsClaim: "groups"})
		userIssuers = append(userIssuers, e.users2.URL)
	}
	agentIssuers := []string{e.agents.URL}
	if o.spiffe != nil {
		issuers = append(issuers, identity.Issuer{Audience: audience, Kind: broker.KindAgent, Subjects: o.spiffeSubjects, SPIFFE: o.spiffe})
		agentIssuers = append(agentIssuers, identity.SPIFFEIssuerURL(o.spiffe.TrustDomain))
	}
	var err error
	e.verifier, err = identity.New(identity.Config{Self: publicURL, Issuers: issuers, RefetchCooldown: o.refetchCooldown})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.verifier.Close)
	e.tokens, err = jwt.New(context.Background(), jwt.Config{Issuer: publicURL, Keys: e.st, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	cat := testCatalog(t)
	if o.closedStage {
		cat = testCatalogClosedStage(t)
	}
	if len(o.introspectors) > 0 {
		cat = testCatalogWith(t, e.resources.URL, o.introspectors)
	}
	if len(o.idjagTargets) > 0 {
		// The targets' resources are audiences, as config requires.
		var extra []broker.Audience
		for _, tg := range o.idjagTargets {
			for _, r := range tg.Resources {
				extra = append(extra, broker.Audience{URL: r})
			}
		}
		cat = testCatalogWith(t, "", nil, extra...)
	}
	var feedStore broker.Store = e.st
	if o.feedReads != nil {
		feedStore = countingFeed{Store: e.st, reads: o.feedReads}
	}
	bcfg := broker.Config{
		Store: feedStore, Tokens: e.tokens, Catalog: cat, UserIssuers: userIssuers, MaxPendingPerAgent: o.maxPending,
		AgentIssuers: agentIssuers,
		BackendKinds: []broker.CredentialKind{"testbackend", broker.KindVaultToken}, Now: o.replicaClock,
		CredentialsPerTask: o.budget.MaxCredentials, ResourcesPerTask: o.budget.MaxResources,
		StepUpTTL: o.stepUpTTL, IDJAGTargets: o.idjagTargets,
	}
	if len(o.policies) > 0 {
		known := func(a string) bool { _, ok := cat.Action(a); return ok }
		src := policy.Source{Engine: o.policyEngine, Patterns: o.policies, Schema: o.schema}
		if e.engine, err = policy.NewEngine(src, func(s policy.Set) error { return s.CheckActions(known) }); err != nil {
			t.Fatal(err)
		}
		bcfg.Policy = e.engine
	}
	if o.vault != nil {
		addr := o.vault.Addr
		if o.vaultAddr != "" {
			addr = o.vaultAddr
		}
		roles := []broker.SecretRole{
			{Name: "task-ro", Action: "db.orders.read", Path: "database/creds/task-ro"},
			{Name: "task-other", Action: "db.orders.read", Path: "database/creds/task-other"},
		}
		tok := o.vaultToken
		if tok == "" {
			tok = o.vault.ErrandToken(t)
		}
		e.vault, err = vault.New(context.Background(), vault.Config{Address: addr, Auth: vault.Auth{Token: tok},
			Roles: roles, Secret: []byte(secret)})
		if err != nil {
			t.Fatal(err)
		}
		bcfg.Secrets, bcfg.SecretRoles = e.vault, roles
	}
	e.svc, err = broker.NewService(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.feed = e.runFeed(feedStore, o.notifier, o.feedWindow)
	e.api, err = New(Config{
		Service: e.svc, Auth: e.verifier, PublicURL: publicURL, JWKS: e.tokens.JWKS,
		UserIssuers: userIssuers, CursorKey: []byte("cursor-key-for-tests-0123456789"),
		Logger:     logger(o.logs),
		RateLimits: o.limits,
		Feed:       e.feed,
		Streams:    o.streams,
		// DPoP server nonces, only when a test asks.
		DPoPNonceEvery: o.dpopNonceEvery,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.api)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) agent(sub string) string { return e.agents.Token(e.t, sub, audience, nil) }
func (e *env) user(sub string, groups ...string) string {
	return e.users.Token(e.t, sub, audience, map[string]any{"groups": groups})
}
func (e *env) resource(sub string) string { return e.resources.Token(e.t, sub, audience, nil) }

// resp is a decoded answer.
type resp struct {
	Status int
	Header http.Header
	Raw    []byte
	JSON   map[string]any
}

func (r resp) str(k string) string { s, _ := r.JSON[k].(string); return s }

// do sends a JSON request (body marshalled unless it is a string or
// []byte) and checks the answer against openapi.yaml.
func (e *env) do(method, path, token string, body any) resp {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			e.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req, raw)
}

func (e *env) send(req *http.Request, raw []byte) resp {
	e.t.Helper()
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	out := resp{Status: res.StatusCode, Header: res.Header}
	out.Raw, _ = io.ReadAll(res.Body)
	_ = json.Unmarshal(out.Raw, &out.JSON)
	if !e.bench {
		checkContract(e.t, req, raw, res.StatusCode, res.Header, out.Raw)
	}
	return out
}

// introspect posts an RFC 7662 form.
func (e *env) introspect(caller, token string) resp {
	e.t.Helper()
	form := url.Values{"token": {token}}.Encode()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/introspect", strings.NewReader(form))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if caller != "" {
		req.Header.Set("Authorization", "Bearer "+caller)
	}
	return e.send(req, []byte(form))
}

func (e *env) mustStatus(r resp, status int) resp {
	e.t.Helper()
	if r.Status != status {
		e.t.Fatalf("status %d, want %d: %s", r.Status, status, r.Raw)
	}
	return r
}

// task creates a pending task for agent on behalf of user with scopes.
func (e *env) task(agentSub, userSub string, scopes ...string) string {
	e.t.Helper()
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent(agentSub), map[string]any{
		"on_behalf_of": userSub, "goal": "triage issues", "scopes": scopes,
		"audiences": []string{apiGitHub, apiStage}, "ttl_seconds": 3600,
	}), http.StatusCreated)
	return r.str("id")
}

// approved creates and approves a task (the user is in group eng).
func (e *env) approved(agentSub, userSub string, scopes ...string) string {
	e.t.Helper()
	id := e.task(agentSub, userSub, scopes...)
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user(userSub, "eng"), map[string]any{}), http.StatusOK)
	return id
}

func (e *env) mint(agentSub, id string, scopes ...string) resp {
	e.t.Helper()
	return e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent(agentSub), map[string]any{
		"scopes": scopes, "audience": apiGitHub,
	})
}

// snapshot is the state of every table a refusal must not touch, and the
// audit head.
type snapshot struct {
	tasks, credentials, stepUps string
	auditSeq                    int64
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	var s snapshot
	ctx := context.Background()
	err := e.st.Pool().QueryRow(ctx, `SELECT
		(SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY id)), '') FROM tasks t),
		(SELECT coalesce(md5(string_agg(c::text, '|' ORDER BY jti)), '') FROM credentials c),
		(SELECT coalesce(md5(string_agg(u::text, '|' ORDER BY id)), '') FROM step_ups u),
		(SELECT seq FROM audit_head)`).Scan(&s.tasks, &s.credentials, &s.stepUps, &s.auditSeq)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// refused asserts a refusal: status, problem+json with code, no change to
// tasks or credentials, and exactly one new audit event, request.refused
// with that code. The refusal of a caller with no verified identity
// (invalid_token, token_not_accepted) adds nothing to the log by itself
// (H03): the event is its source's summary, chained at the next flush.
func (e *env) refused(before snapshot, r resp, status int, code string) {
	e.t.Helper()
	if r.Status != status || r.str("code") != code {
		e.t.Fatalf("got %d %q, want %d %q: %s", r.Status, r.str("code"), status, code, r.Raw)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		e.t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	for _, k := range []string{"type", "title", "detail"} {
		if r.str(k) == "" {
			e.t.Errorf("problem has no %s: %s", k, r.Raw)
		}
	}
	e.refusalRecorded(before, code, code != "invalid_token" && code != "token_not_accepted")
}

// refusalRecorded asserts what every refusal leaves: tasks, credentials
// and step-ups unchanged, and exactly one request.refused event with its
// code — chained at once for a caller who proved who it is (identified),
// else counted and chained only as its source's summary at the next flush.
func (e *env) refusalRecorded(before snapshot, code string, identified bool) {
	e.t.Helper()
	after := e.snapshot()
	if after.tasks != before.tasks {
		e.t.Errorf("a refusal changed the tasks table")
	}
	if after.credentials != before.credentials {
		e.t.Errorf("a refusal changed the credentials table")
	}
	if after.stepUps != before.stepUps {
		e.t.Errorf("a refusal changed the step_ups table")
	}
	if !identified {
		if after.auditSeq != before.auditSeq {
			e.t.Fatalf("an unidentified caller's refusal was chained at once (%d events)", after.auditSeq-before.auditSeq)
		}
		if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
			e.t.Fatal(err)
		}
		after = e.snapshot()
	}
	if after.auditSeq != before.auditSeq+1 {
		e.t.Fatalf("audit grew by %d events, want exactly 1", after.auditSeq-before.auditSeq)
	}
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: before.auditSeq, Limit: 5})
	if err != nil || len(evs) != 1 {
		e.t.Fatalf("audit events: %v %v", evs, err)
	}
	var d struct {
		Code    string
		Summary bool
		Count   int64
	}
	_ = json.Unmarshal(evs[0].Detail, &d)
	if evs[0].Type != broker.EventRequestRefused || d.Code != code || d.Summary == identified {
		e.t.Fatalf("audit event %s %s, want request.refused %s (summary: %v)", evs[0].Type, evs[0].Detail, code, !identified)
	}
	if !identified && d.Count < 1 {
		e.t.Fatalf("audit event %s, want a summary counting the refusal", evs[0].Detail)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// replica is a second Errand on the same database: its own connection
// pool, token issuer (which loads the shared keys), service and server.
func (e *env) replica() *env {
	e.t.Helper()
	r, _ := e.replicaWith(false)
	return r
}

// replicaWith is replica; when cached, it answers introspection from
// memory (revocation.StatusCache) woken by LISTEN/NOTIFY, as serve wires
// it on PostgreSQL, and is returned once the cache is usable.
func (e *env) replicaWith(cached bool) (*env, *revocation.StatusCache) {
	e.t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: testpg.URL(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(st.Close)
	tokens, err := jwt.New(context.Background(), jwt.Config{Issuer: publicURL, Keys: st, Secret: []byte(secret)})
	if err != nil {
		e.t.Fatal(err)
	}
	bcfg := broker.Config{Store: st, Tokens: tokens, Catalog: testCatalog(e.t),
		UserIssuers: []string{e.users.URL}, AgentIssuers: []string{e.agents.URL}, MaxPendingPerAgent: 10000}
	acfg := Config{Auth: e.verifier, PublicURL: publicURL, JWKS: tokens.JWKS,
		UserIssuers: []string{e.users.URL}, CursorKey: []byte("cursor-key-for-tests-0123456789"),
		Logger: logger(nil), RateLimits: RateLimits{PerPrincipal: rate.Inf, PerAddress: rate.Inf}}
	var (
		cache *revocation.StatusCache
		feed  *revocation.Feed
	)
	if cached {
		ctx, cancel := context.WithCancel(context.Background())
		hub := &revocation.Hub{Listen: st.Listen, Poll: time.Second}
		var id [8]byte
		_, _ = rand.Read(id[:])
		cache = &revocation.StatusCache{Store: st, Replica: hex.EncodeToString(id[:]), Wake: hub}
		done := make(chan struct{}, 2)
		go func() { _ = hub.Run(ctx); done <- struct{}{} }()
		go func() { _ = cache.Run(ctx); done <- struct{}{} }()
		e.t.Cleanup(func() { cancel(); <-done; <-done })
		bcfg.Cache = cache
		feed = e.runFeed(st, hub, 0)
	} else {
		feed = e.runFeed(st, nil, 0)
	}
	acfg.Feed = feed
	svc, err := broker.NewService(bcfg)
	if err != nil {
		e.t.Fatal(err)
	}
	acfg.Service = svc
	api, err := New(acfg)
	if err != nil {
		e.t.Fatal(err)
	}
	r := *e
	r.st, r.svc, r.tokens, r.api, r.feed = st, svc, tokens, api, feed
	r.srv = httptest.NewServer(api)
	e.t.Cleanup(r.srv.Close)
	if cached {
		deadline := time.Now().Add(5 * time.Second)
		for !cacheUsable(cache) {
			if time.Now().After(deadline) {
				e.t.Fatal("the cache never became usable")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return &r, cache
}

// cacheUsable probes whether a cache answers from memory: a kept entry
// is served back.
func cacheUsable(c *revocation.StatusCache) bool {
	far := time.Now().Add(time.Hour)
	c.Keep(c.Generation(), broker.Credential{ID: "probe", ExpiresAt: far}, broker.Task{ExpiresAt: far})
	_, _, _, ok := c.Lookup("probe")
	return ok
}
