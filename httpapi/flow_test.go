package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/broker"
)

// TestFullFlow walks the flow of docs/design.md end to end and checks the token
// against the JWKS as any resource server would.
func TestFullFlow(t *testing.T) {
	e := newEnv(t)
	agentTok, userTok := e.agent("agent-7"), e.user("alice", "eng")

	created := e.mustStatus(e.do("POST", "/v1/tasks", agentTok, map[string]any{
		"on_behalf_of": "alice", "goal": "fix the flaky test in acme/api",
		"scopes":    []string{"github.repo.read:acme/**", "github.pr.write:acme/api"},
		"audiences": []string{apiGitHub}, "ttl_seconds": 600,
	}), http.StatusCreated)
	id := created.str("id")
	if created.str("status") != "pending" || created.str("on_behalf_of") != "alice" ||
		created.str("agent") != e.agents.URL+"#agent-7" || created.str("risk") != "medium" {
		t.Fatalf("created task: %s", created.Raw)
	}
	if created.Header.Get("Location") != "/v1/tasks/"+id {
		t.Errorf("Location = %q", created.Header.Get("Location"))
	}

	pending := e.mustStatus(e.do("GET", "/v1/tasks?status=pending", userTok, nil), http.StatusOK)
	found := false
	for _, x := range pending.JSON["tasks"].([]any) {
		found = found || x.(map[string]any)["id"] == id
	}
	if !found {
		t.Fatalf("pending list misses the task: %s", pending.Raw)
	}

	appr := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", userTok, map[string]any{
		"scopes": []string{"github.repo.read:acme/api"},
	}), http.StatusOK)
	if appr.str("status") != "approved" || appr.JSON["approved_at"] == nil {
		t.Fatalf("approved task: %s", appr.Raw)
	}
	if got := appr.JSON["approved_scopes"].([]any); len(got) != 1 || got[0] != "github.repo.read:acme/api" {
		t.Fatalf("approved_scopes = %v", got)
	}

	minted := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", agentTok, map[string]any{
		"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub, "ttl_seconds": 120,
	}), http.StatusCreated)
	if minted.str("token_type") != "Bearer" || minted.JSON["expires_in"].(float64) != 120 ||
		minted.str("scope") != "github.repo.read:acme/api" || minted.str("jti") == "" {
		t.Fatalf("minted: %s", minted.Raw)
	}
	at := minted.str("access_token")

	// Verify offline with the JWKS, as a resource server would.
	jwksResp, err := http.Get(e.srv.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(jwksResp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	jwksResp.Body.Close()
	jws, err := jose.ParseSigned(at, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.Signatures[0].Header
	if hdr.ExtraHeaders["typ"] != "at+jwt" || hdr.Algorithm != "EdDSA" || hdr.KeyID == "" {
		t.Fatalf("header: %+v", hdr)
	}
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s not in JWKS", hdr.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("JWKS does not verify the token: %v", err)
	}
	var c map[string]any
	_ = json.Unmarshal(payload, &c)
	act, _ := c["act"].(map[string]any)
	if c["iss"] != publicURL || c["sub"] != "alice" || c["aud"] != apiGitHub || c["client_id"] != "agent-7" ||
		c["task_id"] != id || c["scope"] != "github.repo.read:acme/api" || c["jti"] != minted.str("jti") ||
		act["sub"] != "agent-7" || act["iss"] != e.agents.URL {
		t.Fatalf("claims: %s", payload)
	}
	exp, iat := c["exp"].(float64), c["iat"].(float64)
	if exp-iat != 120 || c["nbf"].(float64) != iat {
		t.Fatalf("exp-iat = %v", exp-iat)
	}

	rs := e.resource("api-gateway")
	in := e.mustStatus(e.introspect(rs, at), http.StatusOK)
	if in.JSON["active"] != true || in.str("sub") != "alice" || in.str("task_id") != id || in.str("aud") != apiGitHub ||
		in.str("client_id") != "agent-7" || in.str("scope") != "github.repo.read:acme/api" {
		t.Fatalf("introspection: %s", in.Raw)
	}

	closed := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", agentTok, nil), http.StatusOK)
	if closed.str("status") != "closed" || closed.JSON["revoked"].(float64) != 1 || closed.JSON["closed_at"] == nil {
		t.Fatalf("close: %s", closed.Raw)
	}
	in = e.mustStatus(e.introspect(rs, at), http.StatusOK)
	if string(in.Raw) != "{\"active\":false}\n" {
		t.Fatalf("introspection after close: %s", in.Raw)
	}

	// The auditor reads the whole story.
	auditor := e.user("carol", "auditors")
	evs := e.mustStatus(e.do("GET", "/v1/audit/events?task_id="+id, auditor, nil), http.StatusOK)
	var types []string
	for _, x := range evs.JSON["events"].([]any) {
		types = append(types, x.(map[string]any)["type"].(string))
	}
	want := "task.created task.approved credential.issued task.closed credential.revoked"
	if strings.Join(types, " ") != want {
		t.Fatalf("events %v, want %s", types, want)
	}
	creds := e.mustStatus(e.do("GET", "/v1/credentials?task_id="+id, auditor, nil), http.StatusOK)
	list := creds.JSON["credentials"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["jti"] != minted.str("jti") || list[0].(map[string]any)["revoked_at"] == nil {
		t.Fatalf("credentials: %s", creds.Raw)
	}
	// Detail never holds the token or the raw jti.
	if strings.Contains(string(evs.Raw), at) || strings.Contains(string(evs.Raw), `"`+minted.str("jti")+`"`) {
		t.Fatal("the audit trail carries the token or the raw jti")
	}
}

func TestTaskTTLIsCappedAndSaysSo(t *testing.T) {
	e := newEnv(t)
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("a1"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"},
		"audiences": []string{apiGitHub}, "ttl_seconds": 30 * 24 * 3600,
	}), http.StatusCreated)
	created, _ := time.Parse(time.RFC3339Nano, r.str("created_at"))
	expires, _ := time.Parse(time.RFC3339Nano, r.str("expires_at"))
	if r.JSON["ttl_capped"] != true || expires.Sub(created) != broker.DefaultTaskTTLMax {
		t.Fatalf("ttl not capped to 8h: %s", r.Raw)
	}
}

func TestA08TokenTTLIsCappedByConfigAndTask(t *testing.T) {
	e := newEnv(t)
	id := e.task("a1", "alice", "github.repo.read:acme/**")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 90}), http.StatusOK)
	r := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("a1"), map[string]any{
		"scopes": []string{"github.repo.read:acme/x"}, "audience": apiGitHub, "ttl_seconds": 3600,
	}), http.StatusCreated)
	if n := r.JSON["expires_in"].(float64); n > 90 || n < 88 {
		t.Fatalf("expires_in = %v, want capped by the task's 90 s", n)
	}
	id2 := e.approved("a1", "alice", "github.repo.read:acme/**")
	r = e.mustStatus(e.do("POST", "/v1/tasks/"+id2+"/tokens", e.agent("a1"), map[string]any{
		"scopes": []string{"github.repo.read:acme/x"}, "audience": apiGitHub, "ttl_seconds": 3600,
	}), http.StatusCreated)
	if n := r.JSON["expires_in"].(float64); n != 300 {
		t.Fatalf("expires_in = %v, want token_ttl_max 300", n)
	}
}

// TestA08HugeTokenTTLIsCappedNotOverflowed: a ttl_seconds whose nanoseconds
// overflow int64 is still just capped at token_ttl_max.
func TestA08HugeTokenTTLIsCappedNotOverflowed(t *testing.T) {
	e := newEnv(t)
	id := e.approved("a1", "alice", "github.repo.read:acme/**")
	r := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("a1"), map[string]any{
		"scopes": []string{"github.repo.read:acme/x"}, "audience": apiGitHub, "ttl_seconds": int64(9223372037),
	}), http.StatusCreated)
	if r.JSON["expires_in"].(float64) != 300 {
		t.Fatalf("expires_in = %v", r.JSON["expires_in"])
	}
}

// TestA09ConcurrentMintsThenClose: 50 mints race, then close; every token
// that was returned is recorded and inactive after the close commits.
func TestA09ConcurrentMintsThenClose(t *testing.T) {
	e := newEnv(t)
	id := e.approved("a1", "alice", "github.repo.read:acme/**")
	agentTok := e.agent("a1")
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tokens []string
	)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("POST", "/v1/tasks/"+id+"/tokens", agentTok, map[string]any{
				"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub,
			})
			if r.Status == http.StatusCreated {
				mu.Lock()
				tokens = append(tokens, r.str("access_token"))
				mu.Unlock()
			} else if r.Status != http.StatusConflict {
				t.Errorf("mint: %d %s", r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	if len(tokens) != 50 {
		t.Fatalf("%d of 50 mints succeeded before close", len(tokens))
	}
	closed := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.user("alice"), nil), http.StatusOK)
	if closed.JSON["revoked"].(float64) != 50 {
		t.Fatalf("revoked %v, want 50", closed.JSON["revoked"])
	}
	rs := e.resource("rs")
	for _, tok := range tokens {
		if r := e.introspect(rs, tok); string(r.Raw) != "{\"active\":false}\n" {
			t.Fatalf("token still active after close: %s", r.Raw)
		}
	}
}

// TestA09MintRacingCloseNeverIssuesAfterClose: mints and a close race; every
// mint that got a token committed before the close (and is revoked), every
// other one got task_not_active. The task's first mint comes before the
// race, so that the racing mints take the fast path (a snapshot of the
// task, re-checked by the insert) until the close changes the task.
func TestA09MintRacingCloseNeverIssuesAfterClose(t *testing.T) {
	e := newEnv(t)
	quick := e.svc.QuickMints()
	for round := 0; round < 3; round++ {
		mintRacingClose(t, e)
	}
	if e.svc.QuickMints() == quick {
		t.Fatal("no racing mint took the fast path")
	}
}

func mintRacingClose(t *testing.T, e *env) {
	id := e.approved("a1", "alice", "github.repo.read:acme/**")
	agentTok, userTok := e.agent("a1"), e.user("alice")
	first := e.mustStatus(e.mint("a1", id, "github.repo.read:acme/api"), http.StatusCreated)
	var wg sync.WaitGroup
	var mu sync.Mutex
	issued := []string{first.str("jti")}
	start := make(chan struct{})
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := e.do("POST", "/v1/tasks/"+id+"/tokens", agentTok, map[string]any{
				"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub,
			})
			switch {
			case r.Status == http.StatusCreated:
				mu.Lock()
				issued = append(issued, r.str("jti"))
				mu.Unlock()
			case r.Status == http.StatusConflict && r.str("code") == "task_not_active":
			default:
				t.Errorf("mint: %d %s", r.Status, r.Raw)
			}
		}()
	}
	var closeResp resp
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		time.Sleep(5 * time.Millisecond)
		closeResp = e.do("POST", "/v1/tasks/"+id+"/close", userTok, nil)
	}()
	close(start)
	wg.Wait()
	if closeResp.Status != http.StatusOK {
		t.Fatalf("close: %d %s", closeResp.Status, closeResp.Raw)
	}
	var live int
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM credentials WHERE task_id = $1 AND revoked_at IS NULL`, id).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 0 {
		t.Fatalf("%d credentials of the closed task are live", live)
	}
	if int(closeResp.JSON["revoked"].(float64)) != len(issued) {
		t.Fatalf("close revoked %v, but %d tokens were returned", closeResp.JSON["revoked"], len(issued))
	}
}

// A token whose claims differ from its credential record — signed with
// Errand's own key (as with a stolen key) for a real jti — is not active:
// introspection and AuthZEN answer from the record.
func TestIntrospectionTrustsTheRecordNotTheToken(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	real := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
	at, err := e.tokens.Verify(context.Background(), real.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	rs := e.resource("gateway")
	if r := e.introspect(rs, real.str("access_token")); r.JSON["active"] != true {
		t.Fatalf("the real token: %s", r.Raw)
	}
	for name, mod := range map[string]func(*broker.AccessToken){
		"a wider scope": func(a *broker.AccessToken) { a.Scope = "github.repo.read:acme/**" },
		"a later exp":   func(a *broker.AccessToken) { a.ExpiresAt = a.ExpiresAt.Add(time.Hour) },
		"another user":  func(a *broker.AccessToken) { a.Subject = "mallory" },
		"another agent": func(a *broker.AccessToken) { a.Act.Subject = "agent-2"; a.ClientID = "agent-2" },
	} {
		forged := at
		mod(&forged)
		tok, err := e.tokens.Sign(context.Background(), forged)
		if err != nil {
			t.Fatal(err)
		}
		if r := e.introspect(rs, tok); r.JSON["active"] != false || len(r.JSON) != 1 {
			t.Errorf("%s: %s", name, r.Raw)
		}
	}
}
