package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/devidp"
	"github.com/errandhq/errand/store/sqlite"
)

// devServer runs errand dev in-process on addr with the database db.
type devServer struct {
	base   string
	cancel context.CancelFunc
	done   chan error
	out    *bytes.Buffer
}

func startDev(t *testing.T, addr, db string) *devServer {
	t.Helper()
	return startDevWith(t, addr, db, devPolicies{})
}

// startDevWith is startDev with --policies and --policy-schema.
func startDevWith(t *testing.T, addr, db string, pol devPolicies) *devServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devServer{cancel: cancel, done: make(chan error, 1), out: &bytes.Buffer{}}
	ready := make(chan string, 1)
	go func() {
		d.done <- runDev(ctx, devOptions{listen: addr, db: db, policies: pol}, d.out, slog.New(slog.NewTextHandler(io.Discard, nil)), ready)
	}()
	select {
	case a := <-ready:
		d.base = "http://" + a
	case err := <-d.done:
		t.Fatalf("errand dev: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("errand dev did not start")
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *devServer) stop(t *testing.T) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	if err := <-d.done; err != nil {
		t.Errorf("errand dev stopped with %v", err)
	}
}

// cli runs one errand command against the dev server, as a user would:
// it returns stdout, and the line main would print to stderr with exit
// status 1 (empty when the command succeeded).
func (d *devServer) cli(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(append(args, "--server", d.base))
	if err := root.Execute(); err != nil {
		return out.String(), "errand: " + err.Error()
	}
	return out.String(), ""
}

func (d *devServer) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errLine := d.cli(t, args...)
	if errLine != "" {
		t.Fatalf("errand %s: %s", strings.Join(args, " "), errLine)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
}

// TestDevWalkthroughThroughTheCLI drives README's walkthrough with the CLI
// commands themselves against an in-process errand dev.
func TestDevWalkthroughThroughTheCLI(t *testing.T) {
	d := startDev(t, "127.0.0.1:0", filepath.Join(t.TempDir(), "errand-dev.db"))
	wantLines(t, d.out.String(), "Errand dev is ready at "+d.base, "dev token --kind agent --sub agent-1", "audit events")

	tok := func(args ...string) string {
		return strings.TrimSpace(d.must(t, append([]string{"dev", "token"}, args...)...))
	}
	agent := tok("--kind", "agent", "--sub", "agent-1")
	alice := tok("--kind", "user", "--sub", "alice", "--group", "eng")
	rs := tok("--kind", "resource", "--sub", "api-gateway")
	auditor := tok("--kind", "user", "--sub", "carol", "--group", "auditors")
	if strings.Count(agent, ".") != 2 {
		t.Fatalf("dev token: %q", agent)
	}

	id := strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice",
		"--goal", "fix the flaky test", "--scope", "github.repo.read:acme/**", "--scope", "github.pr.write:acme/api",
		"--audience", "https://api.github.com"))
	if !strings.HasPrefix(id, "tsk_") {
		t.Fatalf("task create -q printed %q", id)
	}
	wantLines(t, d.must(t, "task", "list", "--token", alice, "--status", "pending"), "ID", "STATUS", id, "pending", "alice")
	wantLines(t, d.must(t, "task", "approve", "--yes", id, "--token", alice, "--scope", "github.repo.read:acme/api"),
		"status           approved", "approved_scopes  github.repo.read:acme/api")
	at := strings.TrimSpace(d.must(t, "token", "mint", id, "-q", "--token", agent, "--scope", "github.repo.read:acme/api",
		"--audience", "https://api.github.com"))
	wantLines(t, d.must(t, "token", "introspect", at, "--token", rs), "active   true", "sub      alice", "scope    github.repo.read:acme/api")

	out, errLine := d.cli(t, "token", "mint", id, "--token", agent, "--scope", "github.repo.read:acme/**", "--audience", "https://api.github.com")
	if errLine != "errand: 403 scope_exceeds_approval: not approved: github.repo.read:acme/**" || out != "" {
		t.Fatalf("escalation: out %q, error line %q", out, errLine)
	}
	_, errLine = d.cli(t, "task", "create", "--token", agent, "--on-behalf-of", "alice", "--goal", "g",
		"--scope", "github.keys.create:acme/api", "--audience", "https://api.github.com")
	if !strings.HasPrefix(errLine, "errand: 403 blocked_action:") || strings.Contains(errLine, "\n") {
		t.Fatalf("credential action: %q", errLine)
	}
	_, errLine = d.cli(t, "task", "approve", "--yes", id, "--token", agent)
	if !strings.HasPrefix(errLine, "errand: 403 approval_forbidden") {
		t.Fatalf("agent approving: %q", errLine)
	}

	wantLines(t, d.must(t, "task", "close", id, "--token", agent), "status           closed", "revoked          1")
	wantLines(t, d.must(t, "token", "introspect", at, "--token", rs), "active  false")

	events := d.must(t, "audit", "events", "--token", auditor, "--task", id)
	wantLines(t, events, "task.created", "task.approved", "credential.issued", "request.refused", "code=scope_exceeds_approval",
		"task.closed", "credential.revoked")
	creds := d.must(t, "audit", "credentials", "--token", auditor, "--task", id, "--json")
	wantLines(t, creds, `"credentials"`, `"revoked_at": "`)
	_, errLine = d.cli(t, "audit", "events", "--token", agent)
	if !strings.HasPrefix(errLine, "errand: 403 wrong_principal_kind") {
		t.Fatalf("agent reading audit: %q", errLine)
	}
	_, errLine = d.cli(t, "task", "list", "--token", "garbage")
	if !strings.HasPrefix(errLine, "errand: 401 invalid_token") {
		t.Fatalf("garbage token: %q", errLine)
	}
}

// TestDevStateSurvivesRestart: tokens minted before a restart with the same
// --db still introspect as active, until the task is closed.
func TestDevStateSurvivesRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "errand-dev.db")
	addr := freeAddr(t)
	d := startDev(t, addr, db)
	agent := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "agent", "--sub", "agent-1"))
	alice := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "user", "--sub", "alice", "--group", "eng"))
	id := strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice", "--goal", "g",
		"--scope", "github.repo.read:acme/**", "--audience", "https://api.github.com"))
	d.must(t, "task", "approve", "--yes", id, "--token", alice)
	at := strings.TrimSpace(d.must(t, "token", "mint", id, "-q", "--token", agent, "--scope", "github.repo.read:acme/x", "--audience", "https://api.github.com"))
	d.stop(t)

	d2 := startDev(t, addr, db)
	rs := strings.TrimSpace(d2.must(t, "dev", "token", "--kind", "resource", "--sub", "gw"))
	wantLines(t, d2.must(t, "token", "introspect", at, "--token", rs), "active   true")
	// The identity tokens from before the restart still verify too.
	wantLines(t, d2.must(t, "task", "close", id, "--token", agent), "revoked          1")
	wantLines(t, d2.must(t, "token", "introspect", at, "--token", rs), "active  false")
}

// TestServeNeverExposesTheDevIdentityProvider: the dev identity provider
// is mounted only by errand dev.
func TestServeNeverExposesTheDevIdentityProvider(t *testing.T) {
	// The same built-in config errand dev uses, but assembled the way
	// serve assembles it: without the dev identity provider's routes.
	idpSeed := make([]byte, 32)
	idp, err := devidp.New("http://127.0.0.1:1", idpSeed)
	if err != nil {
		t.Fatal(err)
	}
	cfg := devConfig("http://127.0.0.1:1", sqlite.Memory, strings.Repeat("s", 32), idp)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := app.Open(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, b, slog.New(slog.NewTextHandler(io.Discard, nil)), app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	api := a.Handler()
	for _, p := range []string{"/dev/token", "/dev/idp/agent/.well-known/openid-configuration", "/dev/idp/user/jwks"} {
		for _, m := range []string{"GET", "POST"} {
			req, _ := http.NewRequest(m, p, strings.NewReader(`{"kind":"agent","sub":"x"}`))
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
				t.Errorf("serve answered %s %s with %d", m, p, rec.Code)
			}
			if strings.Contains(rec.Body.String(), "id_token") {
				t.Errorf("serve handed out an ID token on %s %s", m, p)
			}
		}
	}
}

// nonLoopbackIP is an IPv4 address of this machine that is not loopback,
// to listen on; ok is false on a machine without one.
func nonLoopbackIP(t *testing.T) (ip string, ok bool) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String(), true
		}
	}
	return "", false
}

// TestDevRefusesANonLoopbackListen: errand dev's /dev/token hands out any
// identity (an admin's, an auditor's), so it listens only on a loopback
// address unless told otherwise in so many words, and then warns.
func TestDevRefusesANonLoopbackListen(t *testing.T) {
	addrs := []string{":0", "0.0.0.0:0"}
	ip, hasIP := nonLoopbackIP(t)
	if hasIP {
		addrs = append(addrs, ip+":0")
	}
	for _, addr := range addrs {
		var logs syncBuffer
		err := runDev(context.Background(), devOptions{listen: addr, db: sqlite.Memory}, io.Discard,
			slog.New(slog.NewTextHandler(&logs, nil)), nil)
		if err == nil || !strings.Contains(err.Error(), "not a loopback address") ||
			!strings.Contains(err.Error(), "--insecure-expose-dev-identities") {
			t.Errorf("errand dev --listen %s: %v, want a refusal naming --insecure-expose-dev-identities", addr, err)
		}
	}
	// The command itself, as a user runs it: exit status 1 and one line.
	if out, err := runErrand(t, "dev", "--listen", "0.0.0.0:0", "--db", sqlite.Memory); err == nil ||
		!strings.Contains(err.Error(), "not a loopback address") || strings.Contains(out, "ready") {
		t.Fatalf("errand dev --listen 0.0.0.0:0: %q, %v", out, err)
	}

	// Loopback names and addresses start as before.
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		d := startDev(t, addr, sqlite.Memory)
		if res, err := http.Post(d.base+"/dev/token", "application/json", strings.NewReader(`{"kind":"agent","sub":"a"}`)); err != nil || res.StatusCode != 200 {
			t.Fatalf("dev on %s: %v %v", addr, res, err)
		}
		d.stop(t)
	}

	// With --insecure-expose-dev-identities it starts, and warns.
	if !hasIP {
		t.Skip("no non-loopback IPv4 address on this machine to listen on")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- runDev(ctx, devOptions{listen: ip + ":0", db: sqlite.Memory, exposeIdentities: true}, io.Discard,
			slog.New(slog.NewTextHandler(logs, nil)), ready)
	}()
	var base string
	select {
	case a := <-ready:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("errand dev --insecure-expose-dev-identities: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("errand dev did not start")
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"INSECURE: errand dev listens on a non-loopback address") {
		t.Fatalf("no warning:\n%s", logs.String())
	}
	res, err := http.Post(base+"/dev/token", "application/json", strings.NewReader(`{"kind":"user","sub":"x","groups":["admins"]}`))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("dev token on %s: %v %v", base, res, err)
	}
	res.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
