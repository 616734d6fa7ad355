package resource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/dpop"
	"github.com/errandhq/errand/internal/testing/errandtest"
	"github.com/errandhq/errand/internal/testing/testpg"
)

func TestRequireAcceptsCoveredScopeAndRefusesTheRest(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	v := newVerifier(t, e, nil)
	ready(t, v)
	task := approvedTask(t, e, "github.repo.read:acme/**", "github.pr.write:acme/api")
	tok := mint(t, e, task, 300, nil, "github.repo.read:acme/**", "github.pr.write:acme/api")

	mux := http.NewServeMux()
	mux.Handle("GET /repo", v.Require("github.repo.read", "acme/api")(ok))
	mux.Handle("POST /pr", v.Require("github.pr.write", "acme/api")(ok))
	mux.Handle("POST /other-pr", v.Require("github.pr.write", "acme-evil/api")(ok))
	mux.Handle("GET "+v.MetadataPath(), v.MetadataHandler())

	if rec := serve(mux, "GET", "/repo", "Bearer "+tok); rec.Code != 200 || rec.Body.String() != "hello alice" {
		t.Fatalf("covered read: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(mux, "POST", "/pr", "bearer "+tok); rec.Code != 200 {
		t.Fatalf("covered write: %d %s", rec.Code, rec.Body)
	}
	rec := serve(mux, "POST", "/other-pr", "Bearer "+tok)
	if rec.Code != http.StatusForbidden || !hasAll(challenge(rec), `Bearer `, `error="insufficient_scope"`, `scope="github.pr.write:acme-evil/api"`) {
		t.Fatalf("acme-evil must be insufficient_scope: %d %q", rec.Code, challenge(rec))
	}
	// No token: RFC 6750 §3.1, no error code, and where the metadata is.
	rec = serve(mux, "GET", "/repo", "")
	if rec.Code != 401 || strings.Contains(challenge(rec), "error=") ||
		!hasAll(challenge(rec), `resource_metadata="https://api.example.test/.well-known/oauth-protected-resource"`) {
		t.Fatalf("no token: %d %q", rec.Code, challenge(rec))
	}
	// A token for another audience, and a mangled one.
	other := tok[:len(tok)-4] + "AAAA"
	if rec := serve(mux, "GET", "/repo", "Bearer "+other); rec.Code != 401 || !strings.Contains(challenge(rec), `error="invalid_token"`) {
		t.Fatalf("bad signature: %d %q", rec.Code, challenge(rec))
	}
	if rec := serve(mux, "GET", "/repo", "Basic "+tok); rec.Code != 400 {
		t.Fatalf("Basic: %d", rec.Code)
	}
	// RFC 9728 metadata.
	rec = serve(mux, "GET", v.MetadataPath(), "")
	var md map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil || rec.Code != 200 {
		t.Fatalf("metadata: %d %s", rec.Code, rec.Body)
	}
	if md["resource"] != errandtest.API || md["authorization_servers"].([]any)[0] != e.URL {
		t.Fatalf("metadata: %v", md)
	}
}

func TestWrongAudienceIsRefused(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	task := approvedTask(t, e, "github.repo.read:acme/**")
	tok := mint(t, e, task, 300, nil, "github.repo.read:acme/**")
	v, err := New(Config{Issuer: e.URL, Audience: errandtest.Other, Credential: idToken(func() string { return e.Resource(t, "x") })})
	if err != nil {
		t.Fatal(err)
	}
	v.freshFor(time.Now().Add(time.Hour))
	if rec := serve(v.Middleware(ok), "GET", "/", "Bearer "+tok); rec.Code != 401 {
		t.Fatalf("a token for another audience: %d", rec.Code)
	}
}

// TestClosedTaskTokenRefusedWithinOneSecond closes a task and measures how
// long the middleware, verifying offline and following the feed, still
// accepts its token.
func TestClosedTaskTokenRefusedWithinOneSecond(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	v := newVerifier(t, e, nil)
	ready(t, v)
	h := v.Require("github.repo.read", "acme/api")(ok)
	for i := range 3 {
		task := approvedTask(t, e, "github.repo.read:acme/**")
		tok := mint(t, e, task, 300, nil, "github.repo.read:acme/api")
		if rec := serve(h, "GET", "/", "Bearer "+tok); rec.Code != 200 {
			t.Fatalf("before close: %d %s", rec.Code, rec.Body)
		}
		closeTask(t, e, task)
		took, refused := within(3*time.Second, func() bool { return serve(h, "GET", "/", "Bearer "+tok).Code == 401 })
		if !refused || took > time.Second {
			t.Fatalf("round %d: the closed task's token was still accepted %s after the close", i, took)
		}
		if !v.Current() {
			t.Fatal("the refusal must come from the feed, offline")
		}
		rec := serve(h, "GET", "/", "Bearer "+tok)
		if !hasAll(challenge(rec), `error="invalid_token"`, `revoked`) {
			t.Fatalf("challenge: %q", challenge(rec))
		}
		t.Logf("round %d: refused %s after the close", i, took)
	}
}

func TestDPoPBoundToken(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	v := newVerifier(t, e, nil)
	ready(t, v)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	task := approvedTask(t, e, "github.repo.read:acme/**")
	tok := mint(t, e, task, 300, key, "github.repo.read:acme/api")
	h := v.Require("github.repo.read", "acme/api")(ok)
	proof := func(method, u string) string {
		p, err := dpop.NewProof(key, method, u, tok, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := proof("GET", "https://api.example.test/repo")
	if rec := serve(h, "GET", "/repo", "DPoP "+tok, "DPoP", p); rec.Code != 200 {
		t.Fatalf("bound token with its proof: %d %s %q", rec.Code, rec.Body, challenge(rec))
	}
	if rec := serve(h, "GET", "/repo", "DPoP "+tok, "DPoP", p); rec.Code != 401 {
		t.Fatalf("a replayed proof: %d", rec.Code)
	}
	rec := serve(h, "GET", "/repo", "Bearer "+tok)
	if rec.Code != 401 || !strings.HasPrefix(challenge(rec), "DPoP ") {
		t.Fatalf("a bound token as a bearer token: %d %q", rec.Code, challenge(rec))
	}
	if rec := serve(h, "GET", "/repo", "DPoP "+tok, "DPoP", proof("GET", "https://api.example.test/elsewhere")); rec.Code != 401 {
		t.Fatalf("a proof for another URL: %d", rec.Code)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	po, _ := dpop.NewProof(other, "GET", "https://api.example.test/repo", tok, time.Now())
	if rec := serve(h, "GET", "/repo", "DPoP "+tok, "DPoP", po); rec.Code != 401 {
		t.Fatalf("a proof of another key: %d", rec.Code)
	}
	// A bearer token may not borrow the DPoP scheme.
	bearer := mint(t, e, task, 300, nil, "github.repo.read:acme/api")
	if rec := serve(h, "GET", "/repo", "DPoP "+bearer, "DPoP", p); rec.Code != 401 {
		t.Fatalf("a bearer token with the DPoP scheme: %d", rec.Code)
	}
}

// TestS02FeedCutFailsClosed cuts every connection to Errand (a TCP proxy
// between the resource server and Errand) and checks the documented
// bound: tokens are refused with 503 once MaxStale has passed, a token
// revoked meanwhile is never accepted after the bound, and the verifier
// recovers when the feed is back.
func TestS02FeedCutFailsClosed(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	proxy, through := testpg.NewProxy(t, e.URL)
	const bound = time.Second
	v := newVerifier(t, e, func(c *Config) { c.MaxStale, c.PollInterval = bound, 100*time.Millisecond }, through)
	ready(t, v)
	h := v.Require("github.repo.read", "acme/api")(ok)
	live := approvedTask(t, e, "github.repo.read:acme/**")
	liveTok := mint(t, e, live, 300, nil, "github.repo.read:acme/api")
	doomed := approvedTask(t, e, "github.repo.read:acme/**")
	doomedTok := mint(t, e, doomed, 300, nil, "github.repo.read:acme/api")
	for _, tok := range []string{liveTok, doomedTok} {
		if rec := serve(h, "GET", "/", "Bearer "+tok); rec.Code != 200 {
			t.Fatalf("before the cut: %d", rec.Code)
		}
	}
	cut := time.Now()
	proxy.Cut()
	closeTask(t, e, doomed) // revoked while the resource server cannot hear it
	// Past the bound (and a poll's margin), every token is refused, with 503.
	time.Sleep(bound + 300*time.Millisecond)
	for range 10 {
		for _, tok := range []string{liveTok, doomedTok} {
			rec := serve(h, "GET", "/", "Bearer "+tok)
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
				t.Fatalf("%s after the cut: %d, want 503 with Retry-After", time.Since(cut), rec.Code)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v.Current() {
		t.Fatal("the verifier claims to be current with Errand unreachable")
	}
	proxy.Restore()
	if _, back := within(5*time.Second, func() bool { return serve(h, "GET", "/", "Bearer "+liveTok).Code == 200 }); !back {
		t.Fatal("the verifier did not recover once the feed was back")
	}
	if rec := serve(h, "GET", "/", "Bearer "+doomedTok); rec.Code != 401 {
		t.Fatalf("the token revoked during the cut: %d, want 401", rec.Code)
	}
}

// feedBlocker is a reverse proxy in front of Errand that can refuse the
// revocation feed (and end the streams open through it) while every other
// endpoint, introspection included, passes.
type feedBlocker struct {
	proxy   *httputil.ReverseProxy
	blocked atomic.Bool
	mu      sync.Mutex
	streams map[*http.Request]context.CancelFunc
}

func (f *feedBlocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v1/revocations") {
		if f.blocked.Load() {
			http.Error(w, "feed down", http.StatusBadGateway)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		f.mu.Lock()
		f.streams[r] = cancel
		f.mu.Unlock()
		defer func() { f.mu.Lock(); delete(f.streams, r); f.mu.Unlock(); cancel() }()
		r = r.WithContext(ctx)
	}
	f.proxy.ServeHTTP(w, r)
}

func (f *feedBlocker) block() {
	f.blocked.Store(true)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, cancel := range f.streams {
		cancel()
	}
}

// TestS02FeedDownFallsBackToIntrospection: with Introspect, a verifier
// whose feed is past its bound asks Errand's introspection for each token:
// the live token is accepted (introspected), the closed task's refused.
func TestS02FeedDownFallsBackToIntrospection(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	u, _ := url.Parse(e.URL)
	fb := &feedBlocker{proxy: httputil.NewSingleHostReverseProxy(u), streams: map[*http.Request]context.CancelFunc{}}
	fb.proxy.FlushInterval = -1
	front := httptest.NewServer(fb)
	t.Cleanup(front.Close)
	const bound = time.Second
	v := newVerifier(t, e, func(c *Config) { c.MaxStale, c.PollInterval, c.Introspect = bound, 100*time.Millisecond, true }, front.URL)
	ready(t, v)
	var seen atomic.Pointer[Token]
	h := v.Require("github.repo.read", "acme/api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := FromContext(r.Context())
		seen.Store(tok)
	}))
	live := approvedTask(t, e, "github.repo.read:acme/**")
	liveTok := mint(t, e, live, 300, nil, "github.repo.read:acme/api")
	doomed := approvedTask(t, e, "github.repo.read:acme/**")
	doomedTok := mint(t, e, doomed, 300, nil, "github.repo.read:acme/api")
	fb.block()
	closeTask(t, e, doomed)
	if _, stale := within(5*time.Second, func() bool { return !v.Current() }); !stale {
		t.Fatal("the verifier stayed current with its feed down")
	}
	if rec := serve(h, "GET", "/", "Bearer "+liveTok); rec.Code != 200 || !seen.Load().Introspected {
		t.Fatalf("live token with the feed down: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(h, "GET", "/", "Bearer "+doomedTok); rec.Code != 401 || !strings.Contains(challenge(rec), "invalid_token") {
		t.Fatalf("closed task's token with the feed down: %d %q", rec.Code, challenge(rec))
	}
	// Without the fallback, the same verifier state refuses everything.
	v.cfg.Introspect = false
	if rec := serve(h, "GET", "/", "Bearer "+liveTok); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("without introspection: %d", rec.Code)
	}
}
