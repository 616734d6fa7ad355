package web_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/httpapi"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/policy"
	"github.com/errandhq/errand/store/postgres"
	"github.com/errandhq/errand/web"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

const (
	audience  = "errand"
	apiGitHub = "https://api.github.com"
	apiLocal  = "http://localhost:9000"
	secret    = "0123456789abcdef0123456789abcdef-test-secret"
)

// env is Errand's REST API and its pages over a real PostgreSQL database,
// real OIDC issuers for agents and users, and sessions (testSessions)
// that stand for the sign-in package's.
type env struct {
	t        testing.TB
	st       *postgres.Store
	srv      *httptest.Server
	svc      *broker.Service
	verifier *identity.Verifier
	agents   *testoidc.Issuer
	users    *testoidc.Issuer
	sessions *testSessions
}

func newEnv(t testing.TB, opts ...func(*httpapi.Config)) *env {
	t.Helper()
	e := &env{t: t, st: testpg.Store(t), agents: testoidc.New(t), users: testoidc.New(t)}
	var err error
	// The server's URL is Errand's public URL: known once it listens.
	mux := http.NewServeMux()
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	e.verifier, err = identity.New(identity.Config{Self: e.srv.URL, Issuers: []identity.Issuer{
		{URL: e.agents.URL, Audience: audience, Kind: broker.KindAgent},
		{URL: e.users.URL, Audience: audience, Kind: broker.KindUser, GroupsClaim: "groups", AuditorGroup: "auditors"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jwt.New(context.Background(), jwt.Config{Issuer: e.srv.URL, Keys: e.st, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	sc := func(ss ...string) broker.Scopes {
		out, err := broker.ParseScopes(ss)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cat, err := broker.NewCatalog(
		[]broker.Action{
			{Name: "github.repo.read", Class: broker.ClassRead, Risk: broker.RiskLow, Description: "Read code, issues and pull requests"},
			{Name: "github.pr.write", Class: broker.ClassWrite, Risk: broker.RiskMedium, Description: "Open and update pull requests"},
			{Name: "github.repo.delete", Class: broker.ClassAdmin, Risk: broker.RiskHigh},
		},
		[]broker.Audience{{URL: apiGitHub, Environment: "prod", AnyIntrospector: true}, {URL: apiLocal, Environment: "local", AnyIntrospector: true}},
		[]broker.Grant{
			{Group: "eng", Scopes: sc("github.repo.read:acme/**", "github.pr.write:acme/**")},
			{Group: "interns", Scopes: sc("github.repo.read:acme/docs")},
		},
		nil,
	)
	if err != nil {
		t.Fatal(err)
	}
	known := func(a string) bool { _, ok := cat.Action(a); return ok }
	engine, err := policy.NewEngine(policy.Source{Patterns: []string{"testdata/policies.cedar"}}, func(s policy.Set) error { return s.CheckActions(known) })
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = broker.NewService(broker.Config{
		Store: e.st, Tokens: tokens, Catalog: cat, UserIssuers: []string{e.users.URL}, AgentIssuers: []string{e.agents.URL},
		MaxPendingPerAgent: 1000, Policy: engine,
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	acfg := httpapi.Config{
		Service: e.svc, Auth: e.verifier, PublicURL: e.srv.URL, JWKS: tokens.JWKS, UserIssuers: []string{e.users.URL},
		CursorKey: []byte("cursor-key-for-tests-0123456789"), Logger: log,
		// No limit unless a test sets one.
		RateLimits: httpapi.RateLimits{PerPrincipal: rate.Inf, PerAddress: rate.Inf},
	}
	for _, o := range opts {
		o(&acfg)
	}
	api, err := httpapi.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	e.sessions = &testSessions{origin: e.srv.URL, byID: map[string]web.Viewer{}}
	pages, err := web.New(web.Config{
		Service: e.svc, API: api, Sessions: e.sessions, Viewer: e.sessions.viewer,
		UserIssuers: []string{e.users.URL}, AgentIssuers: []string{e.agents.URL}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/ui/", pages)
	mux.Handle("/", api)
	return e
}

func (e *env) agentToken(sub string) string { return e.agents.Token(e.t, sub, audience, nil) }
func (e *env) userToken(sub string, groups ...string) string {
	return e.users.Token(e.t, sub, audience, map[string]any{"groups": groups})
}

// principal is a user as the verifier makes them from a real ID token.
func (e *env) principal(sub string, groups ...string) broker.Principal {
	e.t.Helper()
	p, err := e.verifier.Verify(context.Background(), e.userToken(sub, groups...))
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// browser is a person's HTTP client with a session of the pages: a cookie
// jar holding the session cookie, and the session's CSRF token.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
	sid  string
}

func (e *env) signIn(sub string, groups ...string) *browser {
	e.t.Helper()
	sid, csrf := e.sessions.start(e.principal(sub, groups...))
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(e.srv.URL)
	jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sid, Path: "/"}})
	return &browser{e: e, csrf: csrf, sid: sid, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// page is an answer of the pages.
type page struct {
	Status int
	Header http.Header
	Body   string
}

func (b *browser) get(path string) page {
	b.e.t.Helper()
	return b.send(http.MethodGet, path, nil, nil)
}

// post sends a form as a page of Errand's would: the session's CSRF token
// and Errand's own origin (unless the test sets them itself).
func (b *browser) post(path string, form url.Values, header map[string]string) page {
	b.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, set := form["csrf"]; !set {
		form.Set("csrf", b.csrf)
	}
	h := map[string]string{"Origin": b.e.srv.URL, "Sec-Fetch-Site": "same-origin"}
	for k, v := range header {
		h[k] = v
	}
	return b.send(http.MethodPost, path, strings.NewReader(form.Encode()), h)
}

func (b *browser) send(method, path string, body io.Reader, header map[string]string) page {
	b.e.t.Helper()
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return page{Status: res.StatusCode, Header: res.Header, Body: string(raw)}
}

const sessionCookie = "errand_test_session"

// testSessions stands for the sign-in package in these handler tests:
// server-side sessions by cookie, each with its CSRF token, and the same
// checks of a form post (the token, the Origin and Sec-Fetch-Site
// headers). The browser tests sign in through the real one.
type testSessions struct {
	origin string
	mu     sync.Mutex
	byID   map[string]web.Viewer
}

type viewerKey struct{}

func (s *testSessions) start(p broker.Principal) (sid, csrf string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sid, csrf = randomHex(), randomHex()
	s.byID[sid] = web.Viewer{Principal: p, CSRF: csrf}
	return sid, csrf
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *testSessions) viewer(ctx context.Context) (web.Viewer, bool) {
	v, ok := ctx.Value(viewerKey{}).(web.Viewer)
	return v, ok
}

func (s *testSessions) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(sessionCookie); err == nil {
			s.mu.Lock()
			v, ok := s.byID[c.Value]
			s.mu.Unlock()
			if ok {
				r = r.WithContext(context.WithValue(r.Context(), viewerKey{}, v))
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *testSessions) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.viewer(r.Context()); !ok {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}

var errCSRF = &broker.Error{Code: "csrf_failed"}

func (s *testSessions) CheckCSRF(r *http.Request) error {
	v, ok := s.viewer(r.Context())
	if !ok {
		return broker.Errorf(errCSRF, "no session")
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return broker.Errorf(errCSRF, "cross-site request")
	}
	if o := r.Header.Get("Origin"); o != "" && o != s.origin {
		return broker.Errorf(errCSRF, "request from another origin")
	}
	if err := r.ParseForm(); err != nil {
		return broker.Errorf(errCSRF, "unreadable form")
	}
	if tok := r.PostForm.Get("csrf"); tok == "" || tok != v.CSRF {
		return broker.Errorf(errCSRF, "missing or wrong csrf token")
	}
	return nil
}

// rest calls the REST API with a bearer token and decodes its JSON answer.
func (e *env) rest(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// createTask asks, as agent-1, for a task for alice.
func (e *env) createTask(goal string, scopes ...string) string {
	e.t.Helper()
	st, out := e.rest("POST", "/v1/tasks", e.agentToken("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": goal, "scopes": scopes, "audiences": []string{apiGitHub, apiLocal}, "ttl_seconds": 3600,
	})
	if st != http.StatusCreated {
		e.t.Fatalf("create task: %d %v", st, out)
	}
	return out["id"].(string)
}

// mint asks, as agent-1, for a token of the task.
func (e *env) mint(id, scope, aud string) (int, map[string]any) {
	e.t.Helper()
	return e.rest("POST", "/v1/tasks/"+id+"/tokens", e.agentToken("agent-1"), map[string]any{"scopes": []string{scope}, "audience": aud})
}

// task reads the task from the store.
func (e *env) task(id string) broker.Task {
	e.t.Helper()
	t, err := e.st.Task(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return t
}

// lastEvent is the newest audit event.
func (e *env) lastEvent() broker.AuditEvent {
	e.t.Helper()
	seq, _, err := e.st.AuditHead(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: seq - 1, Limit: 1})
	if err != nil || len(evs) != 1 {
		e.t.Fatalf("last event: %v %v", evs, err)
	}
	return evs[0]
}

func (e *env) auditHead() int64 {
	e.t.Helper()
	seq, _, err := e.st.AuditHead(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}
