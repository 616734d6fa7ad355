package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/issuer/vault"
	"github.com/errandhq/errand/revocation"
)

// TestH01VaultForbiddenIsNotRevoked: Errand runs with README's policy;
// then the policy loses what revocation needs. A close is not confirmed:
// the task stays revoking, backend.revoke_failed is raised once the
// outbox's alarm time has passed (an injected clock), the token and its
// secret live on, and nothing is marked done. Given the policy back, the
// outbox confirms.
func TestH01VaultForbiddenIsNotRevoked(t *testing.T) {
	v := testvault.Shared(t)
	root := v.Root()
	tok, policy := v.Token(t, vault.Policy(""))
	e := newEnvWith(t, envOptions{vault: v, vaultToken: tok})
	for _, lost := range [][]string{
		{"auth/token/revoke-accessor"},
		{"auth/token/lookup-accessor"},
		{"auth/token/revoke-accessor", "auth/token/lookup-accessor"},
	} {
		t.Run(strings.Join(lost, "+"), func(t *testing.T) {
			id := e.vaultTask("agent-1")
			data := e.mustStatus(e.secret("agent-1", id, "task-ro"), 201).JSON["data"].(map[string]any)
			var accessor string
			if err := e.st.Pool().QueryRow(context.Background(),
				`SELECT accessor FROM vault_tokens WHERE task_id = $1`, id).Scan(&accessor); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, n := range vault.Needs("") {
				if !inList(lost, n.Path) {
					b.WriteString(`path "` + n.Path + `" { capabilities = ["` + strings.Join(n.Capabilities, `", "`) + `"] }` + "\n")
				}
			}
			if err := root.Sys().PutPolicy(policy, b.String()); err != nil {
				t.Fatal(err)
			}
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)

			reg := prometheus.NewRegistry()
			m, err := revocation.NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			o := e.outbox()
			o.Metrics = m
			// alarmed_at is the database's time, on this machine's clock.
			drainStart := time.Now()
			o.Now = func() time.Time { return time.Now().Add(6 * time.Minute) } // past the 5 min alarm time
			for i := 0; i < 3; i++ {
				if _, err := o.Drain(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "revoking" {
				t.Fatalf("status with Vault refusing the revocation: %s", got)
			}
			var done, alarmed bool
			if err := e.st.Pool().QueryRow(context.Background(), `SELECT done_at IS NOT NULL, alarmed_at IS NOT NULL
				FROM outbox WHERE task_id = $1 AND ref = $2`, id, accessor).Scan(&done, &alarmed); err != nil {
				t.Fatal(err)
			}
			if done || !alarmed {
				t.Fatalf("outbox item done %v alarmed %v", done, alarmed)
			}
			// The package's tests share a database, and this outbox claims any
			// item due: the metric counts each item it alarmed, once.
			var alarms int
			if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE alarmed_at >= $1`,
				drainStart).Scan(&alarms); err != nil {
				t.Fatal(err)
			}
			if n := vaultCounter(t, reg, "errand_backend_revoke_failed_total"); n != float64(alarms) || alarms < 1 {
				t.Fatalf("errand_backend_revoke_failed_total = %v for %d items alarmed", n, alarms)
			}
			evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{TaskID: id, Type: broker.EventBackendRevokeFail, Limit: 10})
			if err != nil || len(evs) != 1 {
				t.Fatalf("backend.revoke_failed events: %v %v", evs, err)
			}
			var d struct {
				Ref   string `json:"ref_sha256"`
				Error string
			}
			if err := json.Unmarshal(evs[0].Detail, &d); err != nil || d.Ref != broker.HashID(accessor) || !strings.Contains(d.Error, "403") {
				t.Fatalf("alarm detail %s", evs[0].Detail)
			}
			if strings.Contains(string(evs[0].Detail), accessor) {
				t.Fatal("the alarm names the accessor in clear")
			}
			if !inList(lost, "auth/token/revoke-accessor") {
				return // the token may be gone; what matters is that Errand did not claim so
			}
			if _, err := root.Auth().Token().LookupAccessor(accessor); err != nil {
				t.Fatalf("test bug: the token is gone although Errand may not revoke it: %v", err)
			}
			conn, err := login(t, v, data)
			if err != nil {
				t.Fatalf("test bug: the secret is dead although nothing could revoke it: %v", err)
			}
			conn.Close(context.Background())

			if err := root.Sys().PutPolicy(policy, vault.Policy("")); err != nil {
				t.Fatal(err)
			}
			o.Now = func() time.Time { return time.Now().Add(time.Hour) } // past any backoff
			if _, err := o.Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), 200).str("status"); got != "closed" {
				t.Fatalf("status once Vault may revoke again: %s", got)
			}
			if _, err := root.Auth().Token().LookupAccessor(accessor); err == nil {
				t.Fatal("the token survived a confirmed revocation")
			}
		})
		if err := root.Sys().PutPolicy(policy, vault.Policy("")); err != nil {
			t.Fatal(err)
		}
	}
}

// vaultCounter sums the counter named name in reg.
func vaultCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func inList(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
