package httpapi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/seal"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/issuer/vault"
	"github.com/errandhq/errand/revocation"
)

// crashAfterVault is the failpoint of F02 around the real issuer: in mode
// "after" Vault creates the task token and the process "dies" before the
// commit that records it (the flow stops there, as if killed); in mode
// "before" Vault is never reached (a call that failed).
type crashAfterVault struct {
	*vault.Issuer
	mode    string
	created chan broker.TaskToken
}

var errCrash = errors.New("failpoint: the flow stops between the Vault call and the commit")

func (c crashAfterVault) CreateTaskToken(ctx context.Context, taskID, intentID string, roles []broker.SecretRole, ttl time.Duration) (broker.TaskToken, error) {
	if c.mode == "before" {
		return broker.TaskToken{}, errCrash
	}
	tok, err := c.Issuer.CreateTaskToken(ctx, taskID, intentID, roles, ttl)
	if err != nil {
		return tok, err
	}
	c.created <- tok
	return broker.TaskToken{}, errCrash
}

// crashingService is a second broker over e's store whose Vault issuer
// stops at the failpoint.
func (e *env) crashingService(t *testing.T, mode string) (*broker.Service, chan broker.TaskToken) {
	t.Helper()
	created := make(chan broker.TaskToken, 1)
	svc, err := broker.NewService(broker.Config{
		Store: e.st, Tokens: e.tokens, Catalog: testCatalog(t), UserIssuers: []string{e.users.URL},
		Secrets: crashAfterVault{Issuer: e.vault, mode: mode, created: created},
		SecretRoles: []broker.SecretRole{
			{Name: "task-ro", Action: "db.orders.read", Path: "database/creds/task-ro"},
			{Name: "task-other", Action: "db.orders.read", Path: "database/creds/task-other"},
		},
		BackendKinds: []broker.CredentialKind{broker.KindVaultToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc, created
}

// leaseLives reports whether Vault still knows the lease, by lookup and
// in the listing of its role's leases.
func leaseLives(t *testing.T, root *vaultapi.Client, leaseID string) bool {
	t.Helper()
	if _, err := root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": leaseID}); err == nil {
		return true
	}
	prefix := leaseID[:strings.LastIndex(leaseID, "/")]
	leases, err := root.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		t.Fatal(err)
	}
	if leases == nil {
		return false
	}
	for _, k := range leases.Data["keys"].([]any) {
		if prefix+"/"+k.(string) == leaseID {
			return true
		}
	}
	return false
}

func (e *env) intentState(taskID string) string {
	e.t.Helper()
	var st string
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT state FROM vault_intents WHERE task_id = $1`, taskID).Scan(&st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// TestF02VaultTokenCreatedBeforeCrashIsRevoked: the flow stops after Vault
// created the task token and before the commit that records it. The
// pending intent is left to its request for the grace time; then the
// reconciler finds the token in Vault by the intent in its metadata,
// records it revoked, raises backend.orphan_found and the metric, and the
// outbox revokes it: the token and every lease under it are gone. An
// intent whose call never created a token is abandoned.
func TestF02VaultTokenCreatedBeforeCrashIsRevoked(t *testing.T) {
	v := testvault.Shared(t)
	e := newEnvWith(t, envOptions{vault: v})
	ctx := context.Background()
	root := v.Root()
	id := e.vaultTask("agent-1")
	agent := broker.Principal{Issuer: e.agents.URL, Subject: "agent-1", Kind: broker.KindAgent}

	crashing, created := e.crashingService(t, "after")
	if _, err := crashing.IssueSecret(ctx, agent, id, "task-ro"); !errors.Is(err, errCrash) {
		t.Fatalf("the failpoint did not fire: %v", err)
	}
	tok := <-created
	if _, err := e.st.Credential(ctx, tok.Accessor); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("test bug: the token was recorded (%v)", err)
	}
	if st := e.intentState(id); st != broker.IntentPending {
		t.Fatalf("intent %s, want pending", st)
	}
	// What such a token can do: read a lease, which lives under it.
	s, _ := seal.New([]byte(secret), "errand vault task token v1")
	raw, err := s.Open(tok.Sealed, []byte(id))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := vaultapi.NewClient(&vaultapi.Config{Address: v.Addr})
	c.SetToken(string(raw))
	lease, err := c.Logical().Read("database/creds/task-ro")
	if err != nil {
		t.Fatal(err)
	}
	user := lease.Data["username"].(string)
	if !roleExists(t, v, user) {
		t.Fatal("test bug: the lease's login does not exist")
	}

	reg := prometheus.NewRegistry()
	m, err := revocation.NewReconcilerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Within the grace time the intent belongs to its request.
	rec := &revocation.Reconciler{Service: e.svc, Vault: e.vault, Metrics: m}
	if res, err := rec.Reconcile(ctx); err != nil || len(res.Orphans) != 0 {
		t.Fatalf("a young intent's token was taken for an orphan: %+v %v", res, err)
	}
	if _, err := root.Auth().Token().LookupAccessor(tok.Accessor); err != nil {
		t.Fatalf("the token was revoked within the grace time: %v", err)
	}

	// Past it (a short grace stands for the time passing), the orphan.
	rec.Grace = time.Millisecond
	res, err := rec.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Orphans) != 1 || res.Orphans[0].Accessor != tok.Accessor || res.Orphans[0].TaskID != id {
		t.Fatalf("orphans %+v", res.Orphans)
	}
	if st := e.intentState(id); st != broker.IntentOrphaned {
		t.Fatalf("intent %s, want orphaned", st)
	}
	if n := vaultCounter(t, reg, "errand_vault_orphans_total"); n != 1 {
		t.Fatalf("errand_vault_orphans_total = %v", n)
	}
	cr, err := e.st.Credential(ctx, tok.Accessor)
	if err != nil || cr.Kind != broker.KindVaultToken || cr.RevokedAt.IsZero() {
		t.Fatalf("orphan's record %+v %v", cr, err)
	}
	evs, err := e.st.AuditEvents(ctx, broker.HistoryFilter{TaskID: id, Type: broker.EventBackendOrphan, Limit: 10})
	if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Detail), broker.HashID(tok.Accessor)) ||
		strings.Contains(string(evs[0].Detail), tok.Accessor) {
		t.Fatalf("backend.orphan_found events %v %v", evs, err)
	}

	if _, err := e.outbox().Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().LookupAccessor(tok.Accessor); err == nil {
		t.Fatal("the orphaned token lives on in Vault")
	}
	// Vault revokes a token's leases asynchronously: within seconds.
	deadline := time.Now().Add(15 * time.Second)
	for leaseLives(t, root, lease.LeaseID) || roleExists(t, v, user) {
		if time.Now().After(deadline) {
			t.Fatal("a lease under the orphaned token (or its login) survived")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res, err := rec.Reconcile(ctx); err != nil || len(res.Orphans) != 0 {
		t.Fatalf("second round: %+v %v", res, err)
	}
	// The task itself is unharmed: its next secret gets a token of its own.
	e.mustStatus(e.secret("agent-1", id, "task-ro"), 201)

	// A call that never reached Vault leaves an intent that is abandoned.
	other := e.vaultTask("agent-1")
	failing, _ := e.crashingService(t, "before")
	if _, err := failing.IssueSecret(ctx, agent, other, "task-ro"); !errors.Is(err, errCrash) {
		t.Fatalf("the failpoint did not fire: %v", err)
	}
	// The grace is the configured one plus the listing's own duration,
	// which grows with every token the package's earlier tests left in the
	// shared Vault: the intent is abandoned once it is older than that.
	abandoned := 0
	for deadline := time.Now().Add(15 * time.Second); abandoned == 0; {
		res, err := rec.Reconcile(ctx)
		if err != nil || len(res.Orphans) != 0 {
			t.Fatalf("abandoning: %+v %v", res, err)
		}
		abandoned += res.Abandoned
		if abandoned == 0 && time.Now().After(deadline) {
			t.Fatal("the intent of a call that never reached Vault was not abandoned")
		}
	}
	if abandoned != 1 {
		t.Fatalf("%d intents abandoned, want 1", abandoned)
	}
	if st := e.intentState(other); st != broker.IntentAbandoned {
		t.Fatalf("intent %s, want abandoned", st)
	}
}
