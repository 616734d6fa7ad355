package httpapi

import (
	"bytes"
	"context"
	"net/http"
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
