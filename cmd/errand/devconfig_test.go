package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/store/sqlite"
)

// devConfigFile is a production-shaped errand.yaml: its own issuers, a
// grant bound to its user issuer, an audience whose only introspector is
// one of its resource servers, and a step-up policy.
const devConfigFile = `public_url: https://errand.example.com
database_url: ${ERRAND_DATABASE_URL}
system_secret: ${ERRAND_SYSTEM_SECRET}
issuers:
  - {url: "https://token.actions.githubusercontent.com", audience: errand, kind: agent}
  - {url: "https://login.example.com", audience: errand, kind: user, groups_claim: groups}
  - {url: "https://oidc.eks.example.com/id/CLUSTER", audience: errand, kind: resource}
grants:
  - issuer: https://login.example.com
    group: payments
    scopes: ["payments.refund:acct/**"]
actions:
  - {name: payments.refund, class: write, risk: high}
audiences:
  - {url: "https://pay.example.com", environment: prod, introspectors: ["https://oidc.eks.example.com/id/CLUSTER#gw"]}
limits: {credentials_per_task: 0, task_ttl_max: 1h}
policies: ["policies/*.cedar"]
`

const devConfigPolicy = `@id("allow")
permit (principal, action, resource);

@id("prod-writes-step-up")
@step_up("a write to production needs your approval each time")
forbid (principal, action, resource)
when { context.environment == "prod" && context.class == "write" };
`

// startDevOptions runs errand dev in-process with o (listen and db
// filled in).
func startDevOptions(t *testing.T, o devOptions) *devServer {
	t.Helper()
	o.listen, o.db = "127.0.0.1:0", sqlite.Memory
	ctx, cancel := context.WithCancel(context.Background())
	d := &devServer{cancel: cancel, done: make(chan error, 1), out: &bytes.Buffer{}}
	ready := make(chan string, 1)
	go func() { d.done <- runDev(ctx, o, d.out, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
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

// TestDevConfigUsesYourCatalog: errand dev --config serves the file's
// catalog, grants, audiences and policies, with the file's issuers
// replaced by the dev identity provider's: a grant bound to the file's
// user issuer and an introspector of its resource issuer work with dev
// tokens, the example catalog is gone, and the step-up policy fires.
func TestDevConfigUsesYourCatalog(t *testing.T) {
	// Unset: the file's secrets and database are errand dev's own.
	t.Setenv("ERRAND_SYSTEM_SECRET", "")
	t.Setenv("ERRAND_DATABASE_URL", "")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policies", "prod.cedar"), []byte(devConfigPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "errand.yaml")
	if err := os.WriteFile(path, []byte(devConfigFile), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDevOptions(t, devOptions{config: path})
	wantLines(t, d.out.String(), "Catalog, grants, audiences, limits and policies: "+path)

	tok := func(args ...string) string {
		return strings.TrimSpace(d.must(t, append([]string{"dev", "token"}, args...)...))
	}
	agent := tok("--kind", "agent", "--sub", "agent-1")
	alice := tok("--kind", "user", "--sub", "alice", "--group", "payments")
	bob := tok("--kind", "user", "--sub", "bob", "--group", "eng")

	// The example catalog is not there.
	if _, errLine := d.cli(t, "task", "create", "--token", agent, "--on-behalf-of", "alice", "--goal", "g",
		"--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com"); !strings.Contains(errLine, "invalid_") {
		t.Fatalf("the example catalog still answers: %q", errLine)
	}
	create := func(user string) string {
		return strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", user, "--goal", "refund",
			"--scope", "payments.refund:acct/**", "--audience", "https://pay.example.com"))
	}
	// The grant, bound to the file's user issuer, is the dev user issuer's.
	id := create("alice")
	d.must(t, "task", "approve", "--yes", id, "--token", alice, "--scope", "payments.refund:acct/42")
	if _, errLine := d.cli(t, "task", "approve", "--yes", create("bob"), "--token", bob); !strings.Contains(errLine, "scope_exceeds_grant") {
		t.Fatalf("a user outside the grant's group approved: %q", errLine)
	}
	// The policy file, relative to the config file, is in force.
	_, errLine := d.cli(t, "token", "mint", id, "--token", agent, "--scope", "payments.refund:acct/42", "--audience", "https://pay.example.com")
	if !strings.Contains(errLine, "403 approval_required") {
		t.Fatalf("the step-up policy did not fire: %q", errLine)
	}
	apr := strings.TrimSpace(d.must(t, "approval", "list", "--token", alice, "--status", "pending", "--json"))
	if !strings.Contains(apr, `"apr_`) {
		t.Fatalf("no pending approval: %s", apr)
	}
	i := strings.Index(apr, `"apr_`)
	aprID := apr[i+1 : i+1+strings.IndexByte(apr[i+1:], '"')]
	d.must(t, "approval", "approve", aprID, "--token", alice)
	at := strings.TrimSpace(d.must(t, "token", "mint", id, "-q", "--token", agent, "--scope", "payments.refund:acct/42", "--audience", "https://pay.example.com"))

	// The audience's introspector, a sub of the file's resource issuer,
	// is that sub at the dev resource issuer; any other is not.
	wantLines(t, d.must(t, "token", "introspect", at, "--token", tok("--kind", "resource", "--sub", "gw")), "active   true")
	wantLines(t, d.must(t, "token", "introspect", at, "--token", tok("--kind", "resource", "--sub", "other")), "active  false")
}

// TestDevConfigRefusesABadFile: a file whose catalog does not hold names
// itself and the problem.
func TestDevConfigRefusesABadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "errand.yaml")
	bad := strings.Replace(devConfigFile, "class: write", "class: writer", 1)
	bad = strings.Replace(bad, `policies: ["policies/*.cedar"]`, "", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runDev(context.Background(), devOptions{listen: "127.0.0.1:0", db: sqlite.Memory, config: path}, io.Discard,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "actions[0]") {
		t.Fatalf("err = %v", err)
	}
}
