package httpapi

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testvault"
)

// syncLog is a log sink safe for the server's goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestH10VaultLeaseIDsAreHashed: a lease id never appears in the audit
// log, in /v1/credentials, in a task's history or in the logs; they carry
// its SHA-256. The credential row keeps it, for revocation.
func TestH10VaultLeaseIDsAreHashed(t *testing.T) {
	v := testvault.Shared(t)
	logs := &syncLog{}
	e := newEnvWith(t, envOptions{vault: v, logs: logs})
	id := e.vaultTask("agent-1")
	lease := e.mustStatus(e.secret("agent-1", id, "task-ro"), 201).str("lease_id")
	if lease == "" {
		t.Fatal("no lease id")
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	if _, err := e.outbox().Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	auditor := e.user("carol", "auditors")
	events := e.mustStatus(e.do("GET", "/v1/audit/events?task_id="+id, auditor, nil), 200)
	creds := e.mustStatus(e.do("GET", "/v1/credentials?task_id="+id, auditor, nil), 200)
	history := e.mustStatus(e.do("GET", "/v1/tasks/"+id+"/history", auditor, nil), 200)
	for name, body := range map[string][]byte{"audit events": events.Raw, "credentials": creds.Raw, "history": history.Raw} {
		if bytes.Contains(body, []byte(lease)) {
			t.Errorf("%s show the lease id in clear", name)
		}
	}
	if strings.Contains(logs.String(), lease) {
		t.Error("the logs show the lease id in clear")
	}
	var stored int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM audit_events WHERE strpos(detail::text, $1) > 0) +
		(SELECT count(*) FROM revocations WHERE jti = $1)`, lease).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("%d audit or feed rows hold the lease id (%v)", stored, err)
	}

	found := false
	for _, ev := range events.JSON["events"].([]any) {
		ev := ev.(map[string]any)
		d := ev["detail"].(map[string]any)
		if ev["type"] == "credential.issued" && d["kind"] == string(broker.KindVaultLease) {
			found = true
			if d["lease_id_sha256"] != broker.HashID(lease) {
				t.Fatalf("issuance detail %v", d)
			}
		}
	}
	if !found {
		t.Fatal("no issuance event of the lease")
	}
	found = false
	for _, c := range creds.JSON["credentials"].([]any) {
		c := c.(map[string]any)
		if c["kind"] == string(broker.KindVaultLease) {
			found = true
			if c["jti"] != "sha256:"+broker.HashID(lease) {
				t.Fatalf("credential jti %v", c["jti"])
			}
		}
	}
	if !found {
		t.Fatal("no lease in /v1/credentials")
	}
	if c, err := e.st.Credential(context.Background(), lease); err != nil || c.Kind != broker.KindVaultLease {
		t.Fatalf("the credential row lost the lease id: %+v %v", c, err)
	}
}
