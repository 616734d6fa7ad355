package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testvault"
)

// slowVault is a reverse proxy in front of the real Vault that, while
// armed, holds every task-token creation (POST auth/token/create) for
// hold before passing it on, and says so on entered.
type slowVault struct {
	hold    time.Duration
	armed   atomic.Bool
	entered chan struct{}
}

func newSlowVault(t *testing.T, target string, hold time.Duration) (*slowVault, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	s := &slowVault{hold: hold, entered: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.armed.Load() && r.URL.Path == "/v1/auth/token/create" {
			select {
			case s.entered <- struct{}{}:
			default:
			}
			time.Sleep(s.hold)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *slowVault) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no task token creation reached Vault")
	}
}

func waitAnswer(t *testing.T, ch <-chan resp, d time.Duration, what string) resp {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("%s did not answer within %v", what, d)
	}
	return resp{}
}

// lockable reports whether the task's row can be locked at once, from a
// transaction of its own.
func (e *env) lockable(id string) error {
	ctx := context.Background()
	tx, err := e.st.Pool().Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE NOWAIT`, id)
	return err
}

// TestH05SlowVaultHoldsNoTaskLock: while Vault takes 5 s to create task
// A's token, A's row is not locked, a mint on A goes through, and a mint
// and a secret on another task B finish well under a second (they used to
// wait the 5 s behind A's lock, in the one group-commit lane).
func TestH05SlowVaultHoldsNoTaskLock(t *testing.T) {
	v := testvault.Shared(t)
	slow, addr := newSlowVault(t, v.Addr, 5*time.Second)
	e := newEnvWith(t, envOptions{vault: v, vaultAddr: addr})
	a, b := e.vaultTask("agent-1"), e.vaultTask("agent-2")
	e.mustStatus(e.secret("agent-2", b, "task-ro"), 201) // B's token exists before Vault slows down

	slow.armed.Store(true)
	aSecret := make(chan resp, 1)
	go func() { aSecret <- e.secret("agent-1", a, "task-ro") }()
	slow.waitEntered(t)
	if err := e.lockable(a); err != nil {
		t.Fatalf("task A's row is locked while Vault creates its token: %v", err)
	}
	aMint := make(chan resp, 1)
	go func() { aMint <- e.mint("agent-1", a, "db.orders.read:database/creds/task-ro") }()
	time.Sleep(200 * time.Millisecond) // A's mint is in the group commit by now

	for _, c := range []struct {
		name string
		do   func() resp
	}{
		{"mint on task B", func() resp { return e.mint("agent-2", b, "db.orders.read:database/creds/task-ro") }},
		{"secret on task B", func() resp { return e.secret("agent-2", b, "task-ro") }},
	} {
		start := time.Now()
		r := c.do()
		took := time.Since(start)
		if r.Status != 201 {
			t.Fatalf("%s: %d %s", c.name, r.Status, r.Raw)
		}
		if took > time.Second {
			t.Fatalf("%s took %v while task A waited on Vault", c.name, took)
		}
		t.Logf("%s: %v", c.name, took)
	}
	if r := waitAnswer(t, aMint, 2*time.Second, "the mint on task A"); r.Status != 201 {
		t.Fatalf("mint on task A: %d %s", r.Status, r.Raw)
	}
	if r := waitAnswer(t, aSecret, 15*time.Second, "task A's secret"); r.Status != 201 {
		t.Fatalf("task A's secret: %d %s", r.Status, r.Raw)
	}
}

// TestH05TaskClosedWhileVaultAnswersRevokesTheNewToken: a close during
// the Vault call is not held up by it; the token Vault then returns is
// recorded revoked, queued and revoked in Vault, and the secret is refused.
func TestH05TaskClosedWhileVaultAnswersRevokesTheNewToken(t *testing.T) {
	v := testvault.Shared(t)
	slow, addr := newSlowVault(t, v.Addr, 3*time.Second)
	e := newEnvWith(t, envOptions{vault: v, vaultAddr: addr})
	id := e.vaultTask("agent-1")
	slow.armed.Store(true)
	sec := make(chan resp, 1)
	go func() { sec <- e.secret("agent-1", id, "task-ro") }()
	slow.waitEntered(t)

	start := time.Now()
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the close waited %v for Vault", took)
	}
	r := waitAnswer(t, sec, 15*time.Second, "the secret")
	if r.Status != 409 || r.str("code") != "task_not_active" {
		t.Fatalf("secret of a task closed meanwhile: %d %s", r.Status, r.Raw)
	}
	ctx := context.Background()
	var (
		accessor string
		revoked  bool
		state    string
	)
	if err := e.st.Pool().QueryRow(ctx, `SELECT c.jti, c.revoked_at IS NOT NULL, i.state FROM credentials c
		JOIN vault_intents i ON i.accessor = c.jti WHERE c.task_id = $1 AND c.kind = 'vault-token'`, id).Scan(&accessor, &revoked, &state); err != nil {
		t.Fatalf("the token Vault created is not recorded: %v", err)
	}
	if !revoked || state != broker.IntentRecorded {
		t.Fatalf("token revoked %v, intent %s", revoked, state)
	}
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "revoking" {
		t.Fatalf("status with the token's revocation queued: %s", got)
	}
	root := v.Root()
	if _, err := root.Auth().Token().LookupAccessor(accessor); err != nil {
		t.Fatalf("test bug: the token is gone before the outbox ran: %v", err)
	}
	if _, err := e.outbox().Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().LookupAccessor(accessor); err == nil {
		t.Fatal("the token created for a closed task lives on in Vault")
	}
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "closed" {
		t.Fatalf("status after Vault confirmed: %s", got)
	}
	evs := strings.Join(e.eventTypes(id), " ")
	if !strings.Contains(evs, "credential.issued credential.revoked") || !strings.Contains(evs, "request.refused") {
		t.Fatalf("events: %s", evs)
	}
}
