package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the sign-in's store

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/signin"
)

// loginRole creates a LOGIN role member of role on the server of u and
// returns a URL of u's database as it; it is dropped at cleanup.
func loginRole(t *testing.T, u, role string) string {
	t.Helper()
	ctx := context.Background()
	var b [4]byte
	_, _ = rand.Read(b[:])
	login, pw := role+"_login", hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE ROLE "+login+" LOGIN PASSWORD '"+pw+"' IN ROLE "+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		for _, r := range []string{login, role} {
			conn.Exec(ctx, "DROP OWNED BY "+r)
			conn.Exec(ctx, "DROP ROLE "+r)
		}
	})
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p.User = url.UserPassword(login, pw)
	return p.String()
}

// TestH07ServeAsTheServingRole is README's production path: the schema's
// owner migrates and runs errand db roles; errand serve --no-migrate runs
// as a login role granted only the serving role, and the whole flow works
// with no warning or error in its log (create, approve, mint, a step-up
// approval, the introspection cache's heartbeat and answers from memory,
// close, the revocation feed, the kill switch, the audit API); then errand
// audit verify and errand audit export run as a login role granted only
// the auditor role, which cannot read the signing keys.
func TestH07ServeAsTheServingRole(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	owner := testpg.NewDatabase(t)
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "step-up.cedar"), []byte(`@id("allow") permit (principal, action, resource);
@id("pr-step-up") @step_up("pull requests need your approval")
forbid (principal, action == Action::"github.pr.write", resource);
`), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	// A webhook receiver: notices are queued, claimed, delivered and
	// completed by the serving role (webhook_deliveries).
	var (
		hookMu sync.Mutex
		hooks  []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hooks = append(hooks, string(body))
		hookMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	secretFile := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(secretFile, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// config is the test's usual config on dbURL, listening on addr, with
	// an admin group, the step-up policy and the webhook.
	config := func(dbURL string) string {
		p := writeConfig(t, dbURL, agents, users, resources)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.Replace(b, []byte("listen: 127.0.0.1:0"), []byte("listen: "+addr), 1)
		b = bytes.Replace(b, []byte("auditor_group: security-auditors}"), []byte("auditor_group: security-auditors, admin_group: errand-admins}"), 1)
		b = append(b, []byte("policies: [\""+filepath.Join(dir, "*.cedar")+"\"]\n")...)
		b = append(b, []byte("notifications:\n  webhooks:\n    - {url: \""+hook.URL+"/hook\", secret_file: \""+secretFile+"\", events: [task.created, task.closed]}\n")...)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ownerCfg := config(owner)
	if out, err := runErrand(t, "migrate", "--config", ownerCfg); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	app, aud := "errand_app_"+hex.EncodeToString(b[:]), "errand_aud_"+hex.EncodeToString(b[:])
	if out, err := runErrand(t, "db", "roles", "--config", ownerCfg, "--app-role", app, "--auditor-role", aud); err != nil ||
		!strings.Contains(out, "roles ready") {
		t.Fatalf("db roles: %v\n%s", err, out)
	}
	appURL := loginRole(t, owner, app)
	appCfg, audCfg := config(appURL), config(loginRole(t, owner, aud))

	stderr := &syncBuffer{}
	root := newRoot()
	root.SetErr(stderr)
	root.SetArgs([]string{"serve", "--no-migrate", "--config", appCfg})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	base := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if res, err := http.Get(base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve --no-migrate as the serving role: %v\n%s", err, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not become ready:\n%s", stderr)
		}
	}

	do := func(method, path, tok string, body any) (int, map[string]any) {
		t.Helper()
		return callStatus(t, base, method, path, tok, body)
	}
	must := func(status int, method, path, tok string, body any) map[string]any {
		t.Helper()
		got, m := do(method, path, tok, body)
		if got != status {
			t.Fatalf("%s %s: %d %v, want %d\nserve's log:\n%s", method, path, got, m, status, stderr)
		}
		return m
	}
	agent := agents.Token(t, "ci-bot", "errand", nil)
	alice := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	admin := users.Token(t, "root", "errand", map[string]any{"groups": []string{"errand-admins"}})
	auditor := users.Token(t, "carol", "errand", map[string]any{"groups": []string{"security-auditors"}})
	rs := resources.Token(t, "gw", "errand", nil)

	id := must(201, "POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "fix a bug",
		"scopes": []string{"github.repo.read:acme/**", "github.pr.write:acme/**"}, "audiences": []string{"https://api.github.com"}})["id"].(string)
	must(200, "POST", "/v1/tasks/"+id+"/approve", alice, map[string]any{})
	read := must(201, "POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{"scopes": []string{"github.repo.read:acme/api"},
		"audience": "https://api.github.com"})

	// A step-up: the mint waits for alice's approval of this very request.
	pr := map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": "https://api.github.com"}
	status, stepUp := do("POST", "/v1/tasks/"+id+"/tokens", agent, pr)
	apr, _ := stepUp["approval_id"].(string)
	if status != 403 || stepUp["code"] != "approval_required" || apr == "" {
		t.Fatalf("mint under the step-up policy: %d %v", status, stepUp)
	}
	if list := must(200, "GET", "/v1/approvals?status=pending", alice, nil); !strings.Contains(fmt.Sprint(list["approvals"]), apr) {
		t.Fatalf("pending approvals of alice: %v", list)
	}
	must(200, "POST", "/v1/approvals/"+apr+"/approve", alice, map[string]any{})
	write := must(201, "POST", "/v1/tasks/"+id+"/tokens", agent, pr)

	// Introspection answers from memory once the cache has its heartbeat.
	metric := func(name string) string {
		res, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v
			}
		}
		return ""
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if in := must(200, "POST", "/v1/introspect", rs, url.Values{"token": {read["access_token"].(string)}}); in["active"] != true {
			t.Fatalf("introspection of an active token: %v", in)
		}
		if h := metric("errand_introspection_cache_hits_total"); h != "" && h != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no introspection answered from memory in 10 s\nserve's log:\n%s", stderr)
		}
	}

	closed := must(200, "POST", "/v1/tasks/"+id+"/close", agent, nil)
	if closed["revoked"] != float64(2) {
		t.Fatalf("close: %v", closed)
	}
	for _, tok := range []any{read["access_token"], write["access_token"]} {
		if in := must(200, "POST", "/v1/introspect", rs, url.Values{"token": {tok.(string)}}); in["active"] != false {
			t.Fatalf("introspection after the close: %v", in)
		}
	}
	feed := fmt.Sprint(must(200, "GET", "/v1/revocations", rs, nil)["revocations"])
	for _, jti := range []any{read["jti"], write["jti"]} {
		if !strings.Contains(feed, jti.(string)) {
			t.Fatalf("the feed lacks %v: %s", jti, feed)
		}
	}

	// The kill switch, on and off.
	other := agents.Token(t, "other-bot", "errand", nil)
	must(201, "POST", "/v1/tasks", other, map[string]any{"on_behalf_of": "alice", "goal": "g",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})
	must(200, "POST", "/v1/agents/suspend", admin, map[string]any{"agent": agents.URL + "#other-bot", "reason": "test"})
	must(403, "POST", "/v1/tasks", other, map[string]any{"on_behalf_of": "alice", "goal": "g",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})
	must(200, "POST", "/v1/agents/unsuspend", admin, map[string]any{"agent": agents.URL + "#other-bot"})

	events := fmt.Sprint(must(200, "GET", "/v1/audit/events?task_id="+id, auditor, nil)["events"])
	for _, want := range []string{"task.created", "task.approved", "approval.approved", "credential.issued", "task.closed"} {
		if !strings.Contains(events, want) {
			t.Fatalf("the task's history lacks %s: %s", want, events)
		}
	}
	must(200, "GET", "/v1/credentials?task_id="+id, auditor, nil)
	must(200, "GET", "/v1/approvals/"+apr, alice, nil)

	// The webhook heard of the task's creation and close.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		hookMu.Lock()
		got := strings.Join(hooks, "\n")
		hookMu.Unlock()
		if strings.Contains(got, `"task.created"`) && strings.Contains(got, `"task.closed"`) && strings.Contains(got, id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook got %q\nserve's log:\n%s", got, stderr)
		}
	}

	stopServe(t, cancel, done, 20*time.Second)
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			t.Errorf("serve as the serving role logged: %s", l)
		}
	}

	// People's sessions and sign-ins in progress, as the serving role:
	// every operation of the sign-in's store.
	sdb, err := sql.Open("pgx", appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	ss, sctx, now := &signin.SQLStore{DB: sdb}, context.Background(), time.Now().Truncate(time.Microsecond)
	person := broker.Principal{Kind: broker.KindUser, Issuer: users.URL, Subject: "alice", Groups: []string{"engineers"}}
	if err := ss.CreateSession(sctx, signin.Record{IDHash: "h1", User: person, CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatalf("create a session as the serving role: %v", err)
	}
	if _, err := ss.Session(sctx, "h1"); err != nil {
		t.Fatalf("read a session: %v", err)
	}
	if err := ss.TouchSession(sctx, "h1", now.Add(time.Minute)); err != nil {
		t.Fatalf("touch a session: %v", err)
	}
	if err := ss.CreateFlow(sctx, signin.Flow{StateHash: "s1", Issuer: users.URL, Nonce: "n", Verifier: "v",
		RedirectURI: "http://" + addr + "/ui/callback", ReturnTo: "/ui/", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatalf("create a flow: %v", err)
	}
	if _, err := ss.TakeFlow(sctx, "s1"); err != nil {
		t.Fatalf("take a flow: %v", err)
	}
	if n, err := ss.DeleteUserSessions(sctx, person.Ref()); err != nil || n != 1 {
		t.Fatalf("end a person's sessions: %d %v", n, err)
	}
	if _, err := ss.DeleteExpired(sctx, now.Add(24*time.Hour)); err != nil {
		t.Fatalf("sweep expired sessions and flows: %v", err)
	}
	if err := ss.DeleteSession(sctx, "h1"); err != nil {
		t.Fatalf("delete a session: %v", err)
	}

	// The auditor role verifies and exports the chain, and reads no key.
	out, err := runErrand(t, "audit", "verify", "--config", audCfg)
	if err != nil || !strings.Contains(out, "audit chain intact") {
		t.Fatalf("audit verify as the auditor role: %v\n%s", err, out)
	}
	out, err = runErrand(t, "audit", "export", "--config", audCfg, "--format", "jsonl")
	if err != nil || !strings.Contains(out, `"type":"approval.approved"`) || !strings.Contains(out, `"type":"agent.suspended"`) {
		t.Fatalf("audit export as the auditor role: %v\n%s", err, out)
	}
	if out, err := runErrand(t, "keys", "list", "--config", audCfg); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("keys list as the auditor role: %v\n%s", err, out)
	}
}

// TestH07ServeRefusesARoleWithoutItsPrivileges: serve --no-migrate as a
// role that lacks a privilege of the serving role (as one granted by an
// older errand db roles would) stops at start, naming what is missing.
func TestH07ServeRefusesARoleWithoutItsPrivileges(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	owner := testpg.NewDatabase(t)
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	ownerCfg := writeConfig(t, owner, agents, users, resources)
	if out, err := runErrand(t, "migrate", "--config", ownerCfg); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	app, aud := "errand_app_"+hex.EncodeToString(b[:]), "errand_aud_"+hex.EncodeToString(b[:])
	if out, err := runErrand(t, "db", "roles", "--config", ownerCfg, "--app-role", app, "--auditor-role", aud); err != nil {
		t.Fatalf("db roles: %v\n%s", err, out)
	}
	appURL := loginRole(t, owner, app)
	loginRole(t, owner, aud) // dropped with its role at cleanup
	conn, err := pgx.Connect(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "REVOKE INSERT ON step_ups FROM "+app); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(writeConfig(t, appURL, agents, users, resources))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	err = serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), false, nil)
	if err == nil || !strings.Contains(err.Error(), "step_ups: INSERT") || !strings.Contains(err.Error(), "errand db roles") {
		t.Fatalf("serve --no-migrate as a role lacking INSERT on step_ups: %v", err)
	}
}

// TestH07DBRolesNeedsPostgreSQL: on SQLite, errand db roles says plainly
// that it needs PostgreSQL, and fails.
func TestH07DBRolesNeedsPostgreSQL(t *testing.T) {
	p := filepath.Join(t.TempDir(), "errand.yaml")
	if err := os.WriteFile(p, []byte("public_url: https://errand.example.com\ndatabase_url: sqlite://"+filepath.Join(t.TempDir(), "e.db")+
		"\nsystem_secret: "+strings.Repeat("s", 32)+"\nissuers:\n  - {url: https://idp.example.com, audience: errand, kind: agent}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runErrand(t, "db", "roles", "--config", p)
	if err == nil || !strings.Contains(err.Error(), "errand db roles needs PostgreSQL") || strings.Contains(out, "roles ready") {
		t.Fatalf("db roles on SQLite: %v\n%s", err, out)
	}
}
