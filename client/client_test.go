package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/client"
	"github.com/errandhq/errand/dpop"
	"github.com/errandhq/errand/internal/testing/errandtest"
	"github.com/errandhq/errand/internal/testing/testpg"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

func request(e *errandtest.Errand) client.CreateTask {
	return client.CreateTask{OnBehalfOf: "alice", Goal: "fix the build", Scopes: []string{"github.repo.read:acme/**"},
		Audiences: []string{errandtest.API}, TTLSeconds: 600}
}

// TestAgentFlowAgainstErrand walks the whole flow with the client against
// a real Errand: create, wait for the approval (given with the version and
// digest the user saw), mint (with its Idempotency-Key), history, revoke,
// close, and a denied task's wait.
func TestAgentFlowAgainstErrand(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx := context.Background()
	agent := client.NewWithSource(e.URL, client.StaticToken(e.Agent(t, "bot")))
	user := client.New(e.URL, e.User(t, "alice", errandtest.Group))
	rs := client.New(e.URL, e.Resource(t, errandtest.RS))

	task, _, err := agent.CreateTask(ctx, request(e))
	if err != nil {
		t.Fatal(err)
	}
	if task.Status != "pending" || task.Digest == "" || task.Version == 0 {
		t.Fatalf("created: %+v", task)
	}
	waited := make(chan client.Task, 1)
	waitErr := make(chan error, 1)
	go func() {
		tk, err := agent.WaitForApproval(ctx, task.ID)
		waited <- tk
		waitErr <- err
	}()
	pending, _, err := user.ListTasks(ctx, "pending")
	if err != nil || len(pending) != 1 || pending[0].ID != task.ID {
		t.Fatalf("pending: %v %v", pending, err)
	}
	// An approval naming another version than the one shown is refused.
	stale := client.Seen(pending[0])
	stale.Version++
	if _, _, err := user.Approve(ctx, task.ID, stale); problemCode(err) != "task_changed" {
		t.Fatalf("stale version: %v", err)
	}
	approved, _, err := user.Approve(ctx, task.ID, client.Seen(pending[0]))
	if err != nil || approved.Status != "approved" {
		t.Fatalf("approve: %+v %v", approved, err)
	}
	select {
	case tk := <-waited:
		if err := <-waitErr; err != nil || tk.Status != "approved" {
			t.Fatalf("WaitForApproval: %+v %v", tk, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitForApproval did not return after the approval")
	}

	mint := client.Mint{Scopes: []string{"github.repo.read:acme/api"}, Audience: errandtest.API}
	tok1, _, err := agent.Mint(ctx, task.ID, mint)
	if err != nil || tok1.AccessToken == "" || tok1.TaskID != task.ID {
		t.Fatalf("mint: %+v %v", tok1, err)
	}
	tok2, _, _ := agent.Mint(ctx, task.ID, mint)
	if tok2.JTI == tok1.JTI {
		t.Fatal("two mints share one automatic Idempotency-Key")
	}
	a, _, err := agent.MintWithKey(ctx, task.ID, mint, "retry-me-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := agent.MintWithKey(ctx, task.ID, mint, "retry-me-1")
	if err != nil || b.JTI != a.JTI {
		t.Fatalf("a repeated Idempotency-Key minted anew: %s vs %s (%v)", a.JTI, b.JTI, err)
	}
	if err := agent.Revoke(ctx, tok1.AccessToken); err != nil {
		t.Fatal(err)
	}
	if in, _, err := rs.Introspect(ctx, tok1.AccessToken); err != nil || in["active"] != false {
		t.Fatalf("a revoked token introspects %v %v", in, err)
	}
	if in, _, err := rs.Introspect(ctx, tok2.AccessToken); err != nil || in["active"] != true {
		t.Fatalf("a live token introspects %v %v", in, err)
	}
	auditor := client.New(e.URL, e.User(t, "audrey", "auditors"))
	h, _, err := auditor.History(ctx, task.ID)
	if err != nil || h.Task.ID != task.ID || len(h.Credentials) != 3 || len(h.Events) == 0 || h.Events[0].Actor.Kind == "" {
		t.Fatalf("history: %d credentials, %d events, %v", len(h.Credentials), len(h.Events), err)
	}
	closed, _, err := agent.Close(ctx, task.ID)
	if err != nil || closed.Status != "closed" || closed.Revoked != 2 {
		t.Fatalf("close: %s revoked %d, %v", closed.Status, closed.Revoked, err)
	}

	denied, _, err := agent.CreateTask(ctx, request(e))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := user.DenySeen(ctx, denied.ID, client.Deny{Reason: "not today", Version: denied.Version, Digest: denied.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.WaitForApproval(ctx, denied.ID); !errors.Is(err, client.ErrNotApproved) || !strings.Contains(err.Error(), "not today") {
		t.Fatalf("waiting on a denied task: %v", err)
	}
}

func problemCode(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Code
	}
	return ""
}

// flaky is a reverse proxy in front of a real Errand that answers the
// first fail requests matching a path with status and Retry-After (after
// passing them on to Errand when forward is set: an answer lost on the
// way back), and records every request it sees.
type flaky struct {
	rp         *httputil.ReverseProxy
	path       string
	status     int
	retryAfter string
	forward    bool
	fail       atomic.Int64

	mu   sync.Mutex
	seen []*http.Request
	at   []time.Time
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, f.path) {
		f.mu.Lock()
		f.seen, f.at = append(f.seen, r.Clone(context.Background())), append(f.at, time.Now())
		f.mu.Unlock()
		if f.fail.Add(-1) >= 0 {
			if f.forward {
				f.rp.ServeHTTP(httptest.NewRecorder(), r)
			}
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(f.status)
			_, _ = w.Write([]byte(`{"status":503,"code":"unavailable","detail":"try later"}`))
			return
		}
	}
	f.rp.ServeHTTP(w, r)
}

func front(t *testing.T, e *errandtest.Errand, f *flaky) string {
	u, _ := url.Parse(e.URL)
	f.rp = httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRetriesHonourRetryAfter: reads and mints are retried on 503 and 429
// after the Retry-After the server names, a mint whose answer was lost
// returns the one credential recorded (same Idempotency-Key), and a
// create, which is not idempotent, is sent once.
func TestRetriesHonourRetryAfter(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx := context.Background()
	user := client.New(e.URL, e.User(t, "alice", errandtest.Group))
	direct := client.New(e.URL, e.Agent(t, "bot"))
	task, _, err := direct.CreateTask(ctx, request(e))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := user.Approve(ctx, task.ID, client.Seen(task)); err != nil {
		t.Fatal(err)
	}

	t.Run("GET after Retry-After", func(t *testing.T) {
		f := &flaky{path: "/v1/tasks/" + task.ID, status: http.StatusServiceUnavailable, retryAfter: "1"}
		f.fail.Store(1)
		c := client.New(front(t, e, f), e.Agent(t, "bot"))
		got, _, err := c.GetTask(ctx, task.ID)
		if err != nil || got.ID != task.ID {
			t.Fatalf("GetTask through one 503: %v", err)
		}
		if len(f.seen) != 2 || f.at[1].Sub(f.at[0]) < time.Second {
			t.Fatalf("%d attempts; the retry must wait Retry-After (1 s)", len(f.seen))
		}
	})
	t.Run("mint whose answer was lost", func(t *testing.T) {
		f := &flaky{path: "/tokens", status: http.StatusTooManyRequests, retryAfter: "0", forward: true}
		f.fail.Store(1)
		c := client.New(front(t, e, f), e.Agent(t, "bot"))
		tok, _, err := c.Mint(ctx, task.ID, client.Mint{Scopes: []string{"github.repo.read:acme/api"}, Audience: errandtest.API})
		if err != nil {
			t.Fatal(err)
		}
		if len(f.seen) != 2 {
			t.Fatalf("%d attempts", len(f.seen))
		}
		k0, k1 := f.seen[0].Header.Get("Idempotency-Key"), f.seen[1].Header.Get("Idempotency-Key")
		if k0 == "" || k0 != k1 {
			t.Fatalf("Idempotency-Key %q then %q", k0, k1)
		}
		auditor := client.New(e.URL, e.User(t, "audrey", "auditors"))
		h, _, err := auditor.History(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Credentials) != 1 || h.Credentials[0].JTI != tok.JTI {
			t.Fatalf("the lost answer's retry recorded %d credentials", len(h.Credentials))
		}
	})
	t.Run("create is sent once", func(t *testing.T) {
		f := &flaky{path: "/v1/tasks", status: http.StatusServiceUnavailable, retryAfter: "0"}
		f.fail.Store(1)
		c := client.New(front(t, e, f), e.Agent(t, "bot"))
		if _, _, err := c.CreateTask(ctx, request(e)); problemCode(err) != "unavailable" {
			t.Fatalf("create through a 503: %v", err)
		}
		if len(f.seen) != 1 {
			t.Fatalf("a create was sent %d times", len(f.seen))
		}
	})
	t.Run("a Retry-After beyond the bound is not waited for", func(t *testing.T) {
		f := &flaky{path: "/v1/tasks/" + task.ID, status: http.StatusServiceUnavailable, retryAfter: "3600"}
		f.fail.Store(1)
		c := client.New(front(t, e, f), e.Agent(t, "bot"))
		start := time.Now()
		if _, _, err := c.GetTask(ctx, task.ID); problemCode(err) != "unavailable" || time.Since(start) > 5*time.Second {
			t.Fatalf("%v after %s", err, time.Since(start))
		}
	})
	t.Run("gives up after Attempts", func(t *testing.T) {
		f := &flaky{path: "/v1/tasks/" + task.ID, status: http.StatusServiceUnavailable}
		f.fail.Store(100)
		c := client.New(front(t, e, f), e.Agent(t, "bot"))
		c.Retry = client.Retry{Attempts: 3, Base: time.Millisecond, Max: 10 * time.Millisecond}
		if _, _, err := c.GetTask(ctx, task.ID); problemCode(err) != "unavailable" || len(f.seen) != 3 {
			t.Fatalf("%v after %d attempts", err, len(f.seen))
		}
	})
}

// TestFileTokenIsRereadWhenTheFileChanges rotates a token file as the
// kubelet rotates a projected service-account token (a symbolic link
// swapped to a new directory) and as a plain rewrite, and calls Errand
// with each token.
func TestFileTokenIsRereadWhenTheFileChanges(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, tok string) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "token"), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// kubelet's layout: token -> ..data/token, ..data -> ..<timestamp>
	write("..v1", e.Agent(t, "bot"))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	src := client.FileToken(filepath.Join(dir, "token"))
	c := client.NewWithSource(e.URL, src)
	task, _, err := c.CreateTask(ctx, request(e))
	if err != nil || !strings.HasSuffix(task.Agent, "#bot") {
		t.Fatalf("as bot: %s %v", task.Agent, err)
	}
	// Rotation: the new token names another agent, so that its use shows.
	write("..v2", e.Agent(t, "bot-2"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink("..v2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	task, _, err = c.CreateTask(ctx, request(e))
	if err != nil || !strings.HasSuffix(task.Agent, "#bot-2") {
		t.Fatalf("after the swap: %s %v", task.Agent, err)
	}
	// A plain rewrite in place.
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte(e.Agent(t, "bot")), 0o600); err != nil {
		t.Fatal(err)
	}
	ps := client.FileToken(plain)
	first, _ := ps.Token(ctx)
	next := e.Agent(t, "bot-3")
	if err := os.WriteFile(plain, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(plain, time.Now().Add(time.Second), time.Now().Add(time.Second))
	if got, _ := ps.Token(ctx); got != next || got == first {
		t.Fatal("the rewritten file was not read again")
	}
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(plain, time.Now().Add(2*time.Second), time.Now().Add(2*time.Second))
	if _, err := ps.Token(ctx); err == nil {
		t.Fatal("an empty token file was accepted")
	}
}

// githubOIDC behaves as GitHub Actions' ID token endpoint is documented
// to: GET ACTIONS_ID_TOKEN_REQUEST_URL (which carries api-version) with
// &audience=, authenticated by "Authorization: bearer
// ACTIONS_ID_TOKEN_REQUEST_TOKEN", answering {"count": n, "value": jwt};
// a wrong request token is 401. The JWT it hands out is the test agent
// issuer's, as GitHub's is token.actions.githubusercontent.com's.
func githubOIDC(t *testing.T, e *errandtest.Errand, requestToken string, hits *atomic.Int64) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/_apis/distributedtask/hubs/build/plans/p1/jobs/j1/idtoken" || r.URL.Query().Get("api-version") != "2.0" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "bearer "+requestToken {
			http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		aud := r.URL.Query().Get("audience")
		if aud == "" {
			aud = "https://github.com/acme" // GitHub's default audience
		}
		tok := e.Agents.Token(t, "repo:acme/api:ref:refs/heads/main", aud, nil)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"count":1,"value":"` + tok + `"}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGitHubActionsToken(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx := context.Background()
	var hits atomic.Int64
	gh := githubOIDC(t, e, "req-token-1", &hits)
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_URL", gh.URL+"/_apis/distributedtask/hubs/build/plans/p1/jobs/j1/idtoken?api-version=2.0")
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "req-token-1")
	c := client.NewWithSource(e.URL, client.GitHubActionsToken(errandtest.IDAudience))
	task, _, err := c.CreateTask(ctx, request(e))
	if err != nil || !strings.HasSuffix(task.Agent, "#repo:acme/api:ref:refs/heads/main") {
		t.Fatalf("as the job: %s %v", task.Agent, err)
	}
	if _, _, err := c.GetTask(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 1 {
		t.Fatalf("the job's token was fetched %d times; it is kept until near its exp", hits.Load())
	}
	// GitHub's default audience is not Errand's: refused by Errand.
	if _, _, err := client.NewWithSource(e.URL, client.GitHubActionsToken("")).CreateTask(ctx, request(e)); problemCode(err) != "invalid_token" {
		t.Fatalf("a token for GitHub's default audience: %v", err)
	}
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "wrong")
	if _, err := client.GitHubActionsToken(errandtest.IDAudience).Token(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong request token: %v", err)
	}
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "")
	if _, err := client.GitHubActionsToken(errandtest.IDAudience).Token(ctx); err == nil || !strings.Contains(err.Error(), "id-token: write") {
		t.Fatalf("outside Actions: %v", err)
	}
}

func TestCommandToken(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	tokFile, count := filepath.Join(dir, "tok"), filepath.Join(dir, "runs")
	if err := os.WriteFile(tokFile, []byte(e.Agent(t, "bot")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := client.NewWithSource(e.URL, client.CommandToken("sh", "-c", `echo run >> "$0"; cat "$1"`, count, tokFile))
	for range 3 {
		if _, _, err := c.ListTasks(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}
	runs, _ := os.ReadFile(count)
	if n := strings.Count(string(runs), "run"); n != 1 {
		t.Fatalf("the command ran %d times for a token valid 5 minutes", n)
	}
	if _, err := client.CommandToken("sh", "-c", "exit 3").Token(ctx); err == nil {
		t.Fatal("a failing command gave a token")
	}
	if _, err := client.StaticToken("").Token(ctx); err == nil {
		t.Fatal("an empty static token")
	}
}

// TestExchangeAndDPoP obtains tokens of an approved task through the OAuth
// token exchange, and a DPoP-bound one through Mint with DPoPKey.
func TestExchangeAndDPoP(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx := context.Background()
	agent := client.New(e.URL, e.Agent(t, "bot"))
	task, _, err := agent.CreateTask(ctx, request(e))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.New(e.URL, e.User(t, "alice", errandtest.Group)).Approve(ctx, task.ID, client.Seen(task)); err != nil {
		t.Fatal(err)
	}
	tr, err := agent.Exchange(ctx, task.ID, errandtest.API, []string{"github.repo.read:acme/api"})
	if err != nil || tr.AccessToken == "" || tr.Scope != "github.repo.read:acme/api" || tr.AuthorizationDetails[0].TaskID != task.ID {
		t.Fatalf("exchange: %+v %v", tr, err)
	}
	if _, err := agent.Exchange(ctx, task.ID, errandtest.API, []string{"github.pr.write:acme/api"}); problemCode(err) != "scope_exceeds_approval" {
		t.Fatalf("an exchange beyond the approval: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	agent.DPoPKey = key
	tok, _, err := agent.Mint(ctx, task.ID, client.Mint{Scopes: []string{"github.repo.read:acme/api"}, Audience: errandtest.API})
	if err != nil || tok.TokenType != "DPoP" {
		t.Fatalf("DPoP mint: %+v %v", tok, err)
	}
	in, _, err := client.New(e.URL, e.Resource(t, errandtest.RS)).Introspect(ctx, tok.AccessToken)
	jkt, _ := dpop.KeyThumbprint(key)
	if err != nil || in["cnf"].(map[string]any)["jkt"] != jkt {
		t.Fatalf("the DPoP-minted token is not bound to the key: %v %v", in, err)
	}
}
