package httpapi

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/seal"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/revocation"
)

// vaultTask is an approved task allowed to read the Vault role task-ro.
func (e *env) vaultTask(agent string) string {
	e.t.Helper()
	return e.approved(agent, "alice", "db.orders.read:database/creds/**")
}

func (e *env) secret(agent, id, role string) resp {
	e.t.Helper()
	return e.do("POST", "/v1/tasks/"+id+"/secrets", e.agent(agent), map[string]any{"role": role})
}

func (e *env) outbox() *revocation.Outbox {
	return &revocation.Outbox{Store: e.st, Service: e.svc, Backends: map[broker.CredentialKind]revocation.Backend{broker.KindVaultToken: e.vault},
		BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
}

// login opens a session on the Vault-managed PostgreSQL with a secret.
func login(t *testing.T, v *testvault.Env, data map[string]any) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pgx.Connect(ctx, v.PGURL(data["username"].(string), data["password"].(string)))
}

func roleExists(t *testing.T, v *testvault.Env, name string) bool {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), v.SuperURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_roles WHERE rolname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestVaultSecretDiesWithItsTask: the agent's secret logs in to
// PostgreSQL; closing the task revokes the task's Vault token through the
// outbox, the PostgreSQL role is dropped and a session opened before the
// close is ended. The agent never sees a Vault token.
func TestVaultSecretDiesWithItsTask(t *testing.T) {
	v := testvault.Shared(t)
	e := newEnvWith(t, envOptions{vault: v})
	id := e.vaultTask("agent-1")
	r := e.mustStatus(e.secret("agent-1", id, "task-ro"), 201)
	if strings.Contains(string(r.Raw), "hvs.") || r.JSON["renewable"] != false || r.str("lease_id") == "" {
		t.Fatalf("secret answer: %s", r.Raw)
	}
	if d := r.JSON["lease_duration"].(float64); d <= 0 || d > 3600 {
		t.Fatalf("lease_duration %v", d)
	}
	data := r.JSON["data"].(map[string]any)
	conn, err := login(t, v, data)
	if err != nil {
		t.Fatalf("the secret does not log in: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	second := e.mustStatus(e.secret("agent-1", id, "task-ro"), 201)
	var tokens int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM credentials WHERE task_id = $1 AND kind = 'vault-token'`, id).Scan(&tokens); err != nil || tokens != 1 {
		t.Fatalf("%d Vault tokens for one task, want 1 (%v)", tokens, err)
	}

	closed := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	start := time.Now()
	if closed.str("status") != "revoking" {
		t.Fatalf("status right after close: %s", closed.str("status"))
	}
	if _, err := e.outbox().Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, d := range []map[string]any{data, second.JSON["data"].(map[string]any)} {
		name := d["username"].(string)
		for roleExists(t, v, name) {
			if time.Since(start) > 15*time.Second {
				t.Fatalf("role %s still exists 15 s after close", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("close to PostgreSQL roles dropped: %v", time.Since(start))
	if _, err := conn.Exec(context.Background(), "SELECT 1"); err == nil {
		t.Fatal("a session opened before the close survived it")
	}
	if _, err := login(t, v, data); err == nil {
		t.Fatal("the secret still logs in after close")
	}
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "closed" {
		t.Fatalf("status after the backend confirmed: %s", got)
	}
	evs := strings.Join(e.eventTypes(id), " ")
	if strings.Count(evs, "credential.issued") != 3 || strings.Count(evs, "credential.revoked") != 3 {
		t.Fatalf("events: %s", evs)
	}
	before := e.snapshot()
	e.refused(before, e.secret("agent-1", id, "task-ro"), 409, "task_not_active")
}

// TestVaultCloseOfTask1LeavesTask10Alive (V04): revocation is by the task
// token's accessor, never by a prefix.
func TestVaultCloseOfTask1LeavesTask10Alive(t *testing.T) {
	v := testvault.Shared(t)
	e := newEnvWith(t, envOptions{vault: v})
	var ids []string
	var secrets []map[string]any
	for i := 0; i < 11; i++ {
		id := e.vaultTask("agent-1")
		ids = append(ids, id)
		secrets = append(secrets, e.mustStatus(e.secret("agent-1", id, "task-ro"), 201).JSON["data"].(map[string]any))
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+ids[1]+"/close", e.agent("agent-1"), nil), 200)
	if _, err := e.outbox().Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for roleExists(t, v, secrets[1]["username"].(string)) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, i := range []int{0, 10} {
		conn, err := login(t, v, secrets[i])
		if err != nil {
			t.Fatalf("task %d's secret died with task 1: %v", i, err)
		}
		conn.Close(context.Background())
	}
}

// TestVaultOutageAtCloseKeepsRevoking (F05): with Vault unreachable the
// close still commits (tokens inactive at once), the task reads revoking,
// and the outbox retries until Vault answers again.
func TestVaultOutageAtCloseKeepsRevoking(t *testing.T) {
	v := testvault.Shared(t)
	proxy, addr := testpg.NewProxy(t, v.Addr)
	e := newEnvWith(t, envOptions{vault: v, vaultAddr: addr})
	id := e.vaultTask("agent-1")
	data := e.mustStatus(e.secret("agent-1", id, "task-ro"), 201).JSON["data"].(map[string]any)
	jwt := e.mustStatus(e.mint("agent-1", id, "db.orders.read:database/creds/task-ro"), 201).str("access_token")
	proxy.Cut()
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	if r := e.introspect(e.resource("rs"), jwt); r.JSON["active"] != false {
		t.Fatal("a token stayed active during a Vault outage")
	}
	o := e.outbox()
	if _, err := o.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "revoking" {
		t.Fatalf("status during the outage: %s", got)
	}
	if !roleExists(t, v, data["username"].(string)) {
		t.Fatal("test bug: the role is gone although Vault was unreachable")
	}
	proxy.Restore()
	deadline := time.Now().Add(10 * time.Second)
	for e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status") != "closed" {
		if time.Now().After(deadline) {
			t.Fatal("the outbox did not complete after Vault came back")
		}
		time.Sleep(60 * time.Millisecond)
		if _, err := o.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for roleExists(t, v, data["username"].(string)) {
		if time.Now().After(deadline) {
			t.Fatal("the PostgreSQL role survived")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestVaultTaskTokenIsConfined (C03, A08): the per-task token can read its
// roles and nothing else: no child tokens, no policies, no renewal.
func TestVaultTaskTokenIsConfined(t *testing.T) {
	v := testvault.Shared(t)
	e := newEnvWith(t, envOptions{vault: v})
	id := e.approved("agent-1", "alice", "db.orders.read:database/creds/task-ro")
	e.mustStatus(e.secret("agent-1", id, "task-ro"), 201)
	before := e.snapshot()
	e.refused(before, e.secret("agent-1", id, "task-other"), 403, "scope_exceeds_approval")
	before = e.snapshot()
	e.refused(before, e.secret("agent-2", id, "task-ro"), 403, "not_task_party")
	before = e.snapshot()
	e.refused(before, e.secret("agent-1", id, "no-such-role"), 400, "invalid_request")

	var sealed []byte
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT sealed FROM vault_tokens WHERE task_id = $1`, id).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	s, _ := seal.New([]byte(secret), "errand vault task token v1")
	raw, err := s.Open(sealed, []byte(id))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := vaultapi.NewClient(&vaultapi.Config{Address: v.Addr})
	c.SetToken(string(raw))
	if _, err := c.Auth().Token().LookupSelf(); err == nil {
		t.Error("the task token carries the default policy (it may look itself up)")
	}
	self, err := v.Root().Auth().Token().Lookup(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if self.Data["renewable"] != false || self.Data["orphan"] != false {
		t.Fatalf("task token: renewable %v orphan %v", self.Data["renewable"], self.Data["orphan"])
	}
	for _, p := range self.Data["policies"].([]any) {
		if p == "default" || p == "root" {
			t.Fatalf("task token carries policy %v", p)
		}
	}
	task, _ := e.st.Task(context.Background(), id)
	if ttl, _ := self.TokenTTL(); ttl <= 0 || time.Now().Add(ttl).After(task.ExpiresAt.Add(2*time.Second)) {
		t.Fatalf("token TTL %v outlives the task (expires %v)", ttl, task.ExpiresAt)
	}
	forbidden := map[string]func() error{
		"create a child token":   func() error { _, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{}); return err },
		"create an orphan":       func() error { _, err := c.Auth().Token().CreateOrphan(&vaultapi.TokenCreateRequest{}); return err },
		"renew itself":           func() error { _, err := c.Auth().Token().RenewSelf(3600); return err },
		"write a policy":         func() error { return c.Sys().PutPolicy("evil", `path "*" { capabilities = ["sudo"] }`) },
		"read another role":      func() error { _, err := c.Logical().Read("database/creds/task-other"); return err },
		"read identity":          func() error { _, err := c.Logical().List("identity/entity/id"); return err },
		"wrap a response":        func() error { _, err := c.Logical().Write("sys/wrapping/wrap", map[string]any{"x": "y"}); return err },
		"read the database conf": func() error { _, err := c.Logical().Read("database/config/pg"); return err },
	}
	for name, f := range forbidden {
		if err := f(); err == nil {
			t.Errorf("the task token could %s", name)
		}
	}
	if _, err := c.Logical().Read("database/creds/task-ro"); err != nil {
		t.Fatalf("the task token cannot read its own role: %v", err)
	}
}

// TestV06LeaseNeverOutlivesItsTask: the role's default TTL (60 s) is
// longer than the task's remaining life (20 s); the lease handed out is not.
func TestV06LeaseNeverOutlivesItsTask(t *testing.T) {
	v := testvault.Shared(t)
	e := newEnvWith(t, envOptions{vault: v})
	id := e.task("agent-1", "alice", "db.orders.read:database/creds/**")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 20}), 200)
	r := e.secret("agent-1", id, "task-ro")
	switch r.Status {
	case 201:
		if d := r.JSON["lease_duration"].(float64); d > 20 {
			t.Fatalf("a %v s lease for a task with 20 s left", d)
		}
	case 409:
		if r.str("code") != "task_not_active" {
			t.Fatalf("refusal: %s", r.Raw)
		}
	default:
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
}

// TestVaultSecretsObeyPoliciesAndBudgets: a secret is a credential like a
// token: policies decide on the role's action and path before Vault is
// called, a @step_up policy asks the user first, and the budget counts it.
func TestVaultSecretsObeyPoliciesAndBudgets(t *testing.T) {
	v := testvault.Shared(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(`
@id("allow") permit (principal, action, resource);
@id("no-task-other") forbid (principal, action, resource) when { resource.path == "database/creds/task-other" };
@id("orders-step-up") @step_up("reading the orders database needs your approval")
forbid (principal, action, resource) when { context.operation == "secret" && resource.path == "database/creds/task-ro" };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{vault: v, policies: []string{filepath.Join(dir, "*.cedar")}, budget: broker.Budget{MaxCredentials: 1}})
	id := e.vaultTask("agent-1")

	before := e.snapshot()
	e.policyDenied(before, e.secret("agent-1", id, "task-other"), "no-task-other")

	r := e.secret("agent-1", id, "task-ro")
	if r.Status != 403 || r.str("code") != "approval_required" {
		t.Fatalf("first secret: %d %s", r.Status, r.Raw)
	}
	creds, err := e.st.Credentials(context.Background(), broker.HistoryFilter{TaskID: id, Limit: 10})
	if err != nil || len(creds) != 0 {
		t.Fatalf("Vault was called before the step-up was approved: %v %v", creds, err)
	}
	e.mustStatus(e.do("POST", "/v1/approvals/"+r.str("approval_id")+"/approve", e.user("alice", "eng"), nil), 200)
	sec := e.mustStatus(e.secret("agent-1", id, "task-ro"), 201)
	c, err := e.st.Credential(context.Background(), sec.str("lease_id"))
	if err != nil || c.StepUpID != r.str("approval_id") {
		t.Fatalf("lease %+v %v: not recorded under the approval", c, err)
	}

	before = e.snapshot()
	e.refused(before, e.secret("agent-1", id, "task-ro"), http.StatusTooManyRequests, "budget_exhausted")
}
