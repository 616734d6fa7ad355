package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/migrations"
)

func TestMain(m *testing.M) {
	code := testpg.Run(m)
	testvault.Stop() // the tests that need Vault share one, started by the first
	os.Exit(code)
}

func writeConfig(t *testing.T, dbURL string, agents, users, resources *testoidc.Issuer) string {
	t.Helper()
	cfg := `listen: 127.0.0.1:0
public_url: https://errand.example.com
database_url: ` + dbURL + `
issuers:
  - {url: "` + agents.URL + `", audience: errand, kind: agent}
  - {url: "` + users.URL + `", audience: errand, kind: user, groups_claim: groups, auditor_group: security-auditors}
  - {url: "` + resources.URL + `", audience: errand, kind: resource}
grants:
  - group: engineers
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
audiences:
  - {url: "https://api.github.com", environment: prod, introspectors: ["` + resources.URL + `#gw"]}
  - https://staging-api.example.com
limits: {token_ttl_max: 5m, task_ttl_max: 8h}
system_secret: ${ERRAND_SYSTEM_SECRET}
`
	p := filepath.Join(t.TempDir(), "errand.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServeAndMigrateCommands runs `errand migrate` and `errand serve` on
// a config of README's configuration reference and walks the flow over
// HTTP.
func TestServeAndMigrateCommands(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	dbURL := testpg.NewDatabase(t)
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	path := writeConfig(t, dbURL, agents, users, resources)

	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"migrate", "--config", path})
	if err := root.Execute(); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	files, err := fs.Glob(migrations.Postgres, "postgres/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("applied %d migration", len(files))) {
		t.Fatalf("migrate output: %q, want %d migrations applied", out.String(), len(files))
	}

	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), false, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start")
	}
	base := "http://" + addr

	call := func(method, path, tok string, body any) map[string]any {
		return callJSON(t, base, method, path, tok, body)
	}
	agent := agents.Token(t, "ci-bot", "errand", nil)
	user := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	task := call("POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "read acme/api",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})
	id := task["id"].(string)
	call("POST", "/v1/tasks/"+id+"/approve", user, map[string]any{"scopes": []string{"github.repo.read:acme/api"}})
	minted := call("POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})
	in := call("POST", "/v1/introspect", resources.Token(t, "gw", "errand", nil), url.Values{"token": {minted["access_token"].(string)}})
	if in["active"] != true || in["iss"] != "https://errand.example.com" {
		t.Fatalf("introspection: %v", in)
	}
	// The task's second mint takes the fast path, and /metrics counts it.
	call("POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), "\nerrand_quick_mints_total 1\n") {
		t.Fatalf("errand_quick_mints_total is not 1 after a task's second mint:\n%s", metrics)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server"} {
		res, err := http.Get(base + p)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, res.StatusCode, err)
		}
		res.Body.Close()
	}

	stopServe(t, cancel, done, 25*time.Second)
}

// stopServe cancels a running serve and fails t unless it returns nil
// within d.
func stopServe(t *testing.T, cancel context.CancelFunc, done <-chan error, d time.Duration) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after shutdown", err)
		}
	case <-time.After(d):
		t.Fatalf("serve did not shut down within %s", d)
	}
}

func TestServeRefusesPendingSchemaWithNoMigrate(t *testing.T) {
	cfg, _, _, _ := loadServeConfig(t)
	err := serve(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), false, nil)
	if err == nil || !strings.Contains(err.Error(), "pending") {
		t.Fatalf("serve on an unmigrated database: %v", err)
	}
}

func TestServeRefusesWrongSystemSecretForStoredKeys(t *testing.T) {
	dbURL := testpg.NewDatabase(t)
	a, u, r := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	path := writeConfig(t, dbURL, a, u, r)
	start := func(secret string) error {
		t.Setenv("ERRAND_SYSTEM_SECRET", secret)
		cfg, err := config.Load(path)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan string, 1)
		done := make(chan error, 1)
		go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true, ready) }()
		select {
		case <-ready:
			cancel()
			return <-done
		case err := <-done:
			cancel()
			return err
		}
	}
	if err := start(strings.Repeat("a", 32)); err != nil {
		t.Fatal(err)
	}
	if err := start(strings.Repeat("b", 32)); err == nil || !strings.Contains(err.Error(), "system_secret") {
		t.Fatalf("start with another system_secret: %v", err)
	}
}

// twoReplicas starts two serve instances on cfg's database and returns
// their base URLs; both stop with the test.
func twoReplicas(t *testing.T, cfg *config.Config) (a, b string) {
	t.Helper()
	addrA, _ := startServe(t, cfg, nil)
	addrB, _ := startServe(t, cfg, nil)
	return "http://" + addrA, "http://" + addrB
}

// startServe runs serve on cfg (migrating) with log (nil: discarded) until
// stop or the test's end, and returns its address. stop shuts it down and
// returns serve's error; the cleanup fails the test on one.
func startServe(t *testing.T, cfg *config.Config, log *slog.Logger) (addr string, stop func() error) {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, true, ready) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() { cancel(); serr = <-done })
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case addr = <-ready:
		return addr, stop
	case err := <-done:
		once.Do(func() { cancel() })
		t.Fatalf("serve: %v", err)
	}
	return "", stop
}

// TestTwoServeReplicasOnOneDatabase: two serve processes' worth of Errand
// (each with its own pool, keys loaded from the database, sweeper, outbox
// and hub) on one PostgreSQL: a token minted on one verifies on the other,
// and the close committed on B is seen by A's next introspection.
func TestTwoServeReplicasOnOneDatabase(t *testing.T) {
	cfg, agents, users, resources := loadServeConfig(t)
	a, b := twoReplicas(t, cfg)
	agent := agents.Token(t, "ci-bot", "errand", nil)
	user := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	rs := resources.Token(t, "gw", "errand", nil)
	call := func(base, method, path, tok string, body any) map[string]any {
		return callJSON(t, base, method, path, tok, body)
	}
	id := call(b, "POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "g",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})["id"].(string)
	call(a, "POST", "/v1/tasks/"+id+"/approve", user, map[string]any{})
	tok := call(b, "POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{"scopes": []string{"github.repo.read:acme/api"},
		"audience": "https://api.github.com"})["access_token"].(string)
	if in := call(a, "POST", "/v1/introspect", rs, url.Values{"token": {tok}}); in["active"] != true {
		t.Fatalf("A does not accept B's token: %v", in)
	}
	call(b, "POST", "/v1/tasks/"+id+"/close", agent, nil)
	if in := call(a, "POST", "/v1/introspect", rs, url.Values{"token": {tok}}); in["active"] != false {
		t.Fatalf("A says active after B's close: %v", in)
	}
	if ja, jb := call(a, "GET", "/.well-known/jwks.json", rs, nil), call(b, "GET", "/.well-known/jwks.json", rs, nil); fmt.Sprint(ja) != fmt.Sprint(jb) {
		t.Fatal("the replicas serve different keys")
	}
}

// TestGracefulShutdownWithAnOpenStream: shutting down ends open revocation
// streams rather than waiting on them, and returns cleanly.
func TestGracefulShutdownWithAnOpenStream(t *testing.T) {
	cfg, _, _, resources := loadServeConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true, ready) }()
	addr := <-ready
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/revocations/stream", nil)
	req.Header.Set("Authorization", "Bearer "+resources.Token(t, "gw", "errand", nil))
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("stream: %v %v", res, err)
	}
	defer res.Body.Close()
	start := time.Now()
	stopServe(t, cancel, done, 10*time.Second) // not waiting on the open stream
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if _, err := io.ReadAll(res.Body); err != nil {
		t.Logf("stream ended: %v", err)
	}
}

// callJSON sends a JSON body (or a form, for url.Values) with a bearer
// token and decodes the JSON answer; any status of 300 or more fails t.
func callJSON(t *testing.T, base, method, path, tok string, body any) map[string]any {
	t.Helper()
	status, m := callStatus(t, base, method, path, tok, body)
	if status >= 300 {
		t.Fatalf("%s %s%s: %d %v", method, base, path, status, m)
	}
	return m
}

// callStatus is callJSON that returns the status instead of failing on it.
func callStatus(t *testing.T, base, method, path, tok string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	ct := "application/json"
	switch v := body.(type) {
	case url.Values:
		rd, ct = strings.NewReader(v.Encode()), "application/x-www-form-urlencoded"
	case nil:
	default:
		raw, _ := json.Marshal(v)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	if rd != nil {
		req.Header.Set("Content-Type", ct)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

// loadServeConfig writes and loads a config of README's configuration
// reference for a fresh database and three real issuers (agents, users, resource servers).
func loadServeConfig(t *testing.T) (*config.Config, *testoidc.Issuer, *testoidc.Issuer, *testoidc.Issuer) {
	t.Helper()
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	cfg, err := config.Load(writeConfig(t, testpg.NewDatabase(t), agents, users, resources))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, agents, users, resources
}

// TestServeCommandWritesItsLogOnExit runs the `serve` command itself with
// a flush interval longer than the test: its log lines wait in the buffer
// while it serves, and are on stderr once the command has returned.
func TestServeCommandWritesItsLogOnExit(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	defer func(d time.Duration) { logFlush = d }(logFlush)
	logFlush = time.Hour
	dbURL := testpg.NewDatabase(t)
	path := writeConfig(t, dbURL, testoidc.New(t), testoidc.New(t), testoidc.New(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(cfg, []byte("listen: 127.0.0.1:0"), []byte("listen: "+addr), 1), 0o600); err != nil {
		t.Fatal(err)
	}

	stderr := &syncBuffer{}
	root := newRoot()
	root.SetErr(stderr)
	root.SetArgs([]string{"serve", "--config", path})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
			res.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned %v; stderr:\n%s", err, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not answer /healthz in 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := http.Get("http://" + addr + "/v1/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	id := res.Header.Get("X-Request-Id")
	if got := stderr.String(); got != "" {
		t.Fatalf("log lines reached stderr before the interval or the exit:\n%s", got)
	}
	stopServe(t, cancel, done, 20*time.Second)
	var serving, found bool
	for _, l := range strings.Split(stderr.String(), "\n") {
		var line struct {
			Msg       string
			RequestID string `json:"request_id"`
			Status    int
		}
		if json.Unmarshal([]byte(l), &line) != nil {
			continue
		}
		serving = serving || line.Msg == "errand serving"
		found = found || (line.Msg == "request" && line.RequestID == id && line.Status == http.StatusNotFound)
	}
	if !serving || id == "" || !found {
		t.Fatalf("the start line or request %q's 404 line is missing from stderr:\n%s", id, stderr)
	}
}
