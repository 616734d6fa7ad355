package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestF08AuditWriteFailureIssuesNothing: when the audit log cannot be
// written (here a trigger makes PostgreSQL refuse this agent's events, as a
// full disk or a revoked permission would), the mint fails in the same
// transaction: no token is returned and no credential row is left, on the
// quick path and on the slow one; other agents' work goes on.
func TestF08AuditWriteFailureIssuesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.approved("f08-agent", "alice", "github.repo.read:acme/**")
	// One mint first, so the next one may take the quick path.
	e.mustStatus(e.mint("f08-agent", id, "github.repo.read:acme/api"), http.StatusCreated)
	pool := e.st.Pool()
	for _, q := range []string{
		`CREATE FUNCTION f08_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'f08: the audit log cannot be written'; END $$`,
		`CREATE TRIGGER f08_refuse BEFORE INSERT ON audit_events FOR EACH ROW
			WHEN (NEW.actor_sub = 'f08-agent') EXECUTE FUNCTION f08_refuse()`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		_, _ = pool.Exec(ctx, `DROP TRIGGER IF EXISTS f08_refuse ON audit_events`)
		_, _ = pool.Exec(ctx, `DROP FUNCTION IF EXISTS f08_refuse()`)
	}()
	count := func() (n int) {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM credentials WHERE task_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	for i := 0; i < 3; i++ {
		r := e.mint("f08-agent", id, "github.repo.read:acme/api")
		if r.Status < 500 || strings.Contains(string(r.Raw), "access_token") {
			t.Fatalf("mint %d with the audit log failing: %d %s", i, r.Status, r.Raw)
		}
	}
	// The slow path too: a mint with an Idempotency-Key takes the lock.
	raw := []byte(`{"scopes":["github.repo.read:acme/api"],"audience":"` + apiGitHub + `"}`)
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+e.agent("f08-agent"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "f08-slow-path")
	if r := e.send(req, raw); r.Status < 500 || strings.Contains(string(r.Raw), "access_token") {
		t.Fatalf("slow-path mint with the audit log failing: %d %s", r.Status, r.Raw)
	}
	// And a close: the task stays approved, its credentials unrevoked.
	if r := e.do("POST", "/v1/tasks/"+id+"/close", e.agent("f08-agent"), nil); r.Status < 500 {
		t.Fatalf("close with the audit log failing: %d %s", r.Status, r.Raw)
	}
	if n := count(); n != before {
		t.Fatalf("%d credentials recorded without their audit events", n-before)
	}
	var status string
	if err := pool.QueryRow(ctx, `SELECT status FROM tasks WHERE id = $1`, id).Scan(&status); err != nil || status != "approved" {
		t.Fatalf("task status %q (%v) after a failed close, want approved", status, err)
	}
	// Another agent is unaffected.
	other := e.approved("f08-other", "alice", "github.repo.read:acme/**")
	e.mustStatus(e.mint("f08-other", other, "github.repo.read:acme/api"), http.StatusCreated)
}

// TestF08UnrecordedRefusalIsUnavailable: a refusal whose audit event
// cannot be written is answered 503 unavailable with Retry-After, never as
// the refusal it was (a refusal that left no trace): the broker's own (a
// mint beyond the approval, through REST and through the token exchange)
// and the API's (a body it cannot decode) alike.
func TestF08UnrecordedRefusalIsUnavailable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.approved("f08r-agent", "alice", "github.repo.read:acme/api")
	pool := e.st.Pool()
	for _, q := range []string{
		`CREATE FUNCTION f08r_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'f08r: the audit log cannot be written'; END $$`,
		`CREATE TRIGGER f08r_refuse BEFORE INSERT ON audit_events FOR EACH ROW
			WHEN (NEW.actor_sub = 'f08r-agent') EXECUTE FUNCTION f08r_refuse()`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		_, _ = pool.Exec(ctx, `DROP TRIGGER IF EXISTS f08r_refuse ON audit_events`)
		_, _ = pool.Exec(ctx, `DROP FUNCTION IF EXISTS f08r_refuse()`)
	}()
	for name, r := range map[string]resp{
		"broker, REST": e.mint("f08r-agent", id, "github.repo.read:acme/web"),
		"api, REST":    e.do("POST", "/v1/tasks/"+id+"/tokens", e.agent("f08r-agent"), `{"scopes": [`),
	} {
		if r.Status != http.StatusServiceUnavailable || r.str("code") != "unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: an unrecorded refusal answered %d %s (Retry-After %q), want 503 unavailable",
				name, r.Status, r.Raw, r.Header.Get("Retry-After"))
		}
	}
	for name, r := range map[string]resp{
		"broker, token exchange": e.form("/oauth/token", "", e.exchangeForm("f08r-agent", id, url.Values{"scope": {"github.repo.read:acme/web"}})),
		"api, token exchange":    e.form("/oauth/token", "", e.exchangeForm("f08r-agent", id, url.Values{"grant_type": {"password"}})),
	} {
		if r.Status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: an unrecorded refusal answered %d %s (Retry-After %q), want 503 temporarily_unavailable",
				name, r.Status, r.Raw, r.Header.Get("Retry-After"))
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE actor_sub = 'f08r-agent' AND type = 'request.refused'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d refusal events (%v), want none", n, err)
	}
}
