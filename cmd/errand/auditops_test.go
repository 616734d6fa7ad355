package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/postgres"
)

// auditDB is a fresh, migrated database with n chained audit events, and a
// config file pointing at it.
func auditDB(t *testing.T, n int) (string, string) {
	t.Helper()
	u := testpg.NewDatabase(t)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, st, n, "writer")
	cfg := fmt.Sprintf("public_url: https://errand.example.com\ndatabase_url: %s\nsystem_secret: %s\nissuers:\n  - {url: https://idp.example.com, audience: errand, kind: agent}\n", u, strings.Repeat("s", 32))
	p := filepath.Join(t.TempDir(), "errand.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return u, p
}

func appendEvents(t *testing.T, st broker.Store, n int, who string) {
	t.Helper()
	for i := 0; i < n; i++ {
		err := st.InTx(context.Background(), func(tx broker.Tx) error {
			return tx.AppendAudit(context.Background(), broker.AuditEvent{Time: time.Now(), Type: broker.EventRequestRefused,
				Actor: broker.Actor{Kind: "agent", Issuer: "https://idp", Subject: who}, TaskID: "tsk_x",
				Detail: []byte(fmt.Sprintf(`{"code":"blocked_action","n":%d}`, i))})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func runErrand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func tamper(t *testing.T, u string, stmts ...string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range append([]string{"ALTER TABLE audit_events DISABLE TRIGGER USER"}, stmts...) {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestAuditVerifyDetectsTampering: an intact chain verifies; an edited,
// deleted, swapped or truncated one fails naming the first broken seq.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	_, intact := auditDB(t, 20)
	out, err := runErrand(t, "audit", "verify", "--config", intact)
	if err != nil || !strings.Contains(out, "audit chain intact: 20 events, head seq 20") {
		t.Fatalf("intact chain: %q %v", out, err)
	}
	cases := []struct {
		name  string
		stmts []string
		seq   string
	}{
		{"edited detail", []string{`UPDATE audit_events SET detail = '{"code":"none"}' WHERE seq = 7`}, "seq 7"},
		{"edited actor", []string{`UPDATE audit_events SET actor_sub = 'someone-else' WHERE seq = 12`}, "seq 12"},
		{"deleted row", []string{`DELETE FROM audit_events WHERE seq = 8`}, "seq 8"},
		{"swapped rows", []string{
			`UPDATE audit_events SET seq = -5 WHERE seq = 5`, `UPDATE audit_events SET seq = 5 WHERE seq = 6`,
			`UPDATE audit_events SET seq = 6 WHERE seq = -5`}, "seq 5"},
		{"newest events removed", []string{`DELETE FROM audit_events WHERE seq > 17`}, "seq 18"},
		{"forged event appended", []string{
			`INSERT INTO audit_events (seq, time, type, actor_kind, detail, hash) VALUES (21, now(), 'task.created', 'agent', '{}', 'x')`}, "seq 21"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, cfg := auditDB(t, 20)
			tamper(t, u, c.stmts...)
			out, err := runErrand(t, "audit", "verify", "--config", cfg)
			if err == nil || !strings.Contains(err.Error(), "audit chain broken at "+c.seq+":") {
				t.Fatalf("verify after %s: %q, %v; want the break at %s", c.name, out, err, c.seq)
			}
		})
	}
}

// TestAuditChainWithConcurrentWritersOfTwoProcesses: two stores (two
// pools, as two replicas would have) appending at once keep one valid chain.
func TestAuditChainWithConcurrentWritersOfTwoProcesses(t *testing.T) {
	u, cfg := auditDB(t, 0)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				appendEvents(t, st, 25, fmt.Sprintf("replica-%d", w))
			}()
		}
	}
	wg.Wait()
	out, err := runErrand(t, "audit", "verify", "--config", cfg)
	if err != nil || !strings.Contains(out, "intact: 200 events") {
		t.Fatalf("verify: %q %v", out, err)
	}
}

func TestAuditExport(t *testing.T) {
	_, cfg := auditDB(t, 5)
	out, err := runErrand(t, "audit", "export", "--config", cfg, "--format", "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines: %q", len(lines), out)
	}
	var ev struct {
		Seq    int64
		Detail map[string]any
		Hash   string
	}
	if err := json.Unmarshal([]byte(lines[4]), &ev); err != nil || ev.Seq != 5 || ev.Detail["code"] != "blocked_action" || len(ev.Hash) != 64 {
		t.Fatalf("line 5: %q (%v)", lines[4], err)
	}
	out, err = runErrand(t, "audit", "export", "--config", cfg, "--format", "csv", "--since", time.Now().Add(-time.Hour).Format(time.RFC3339))
	if err != nil || len(strings.Split(strings.TrimSpace(out), "\n")) != 6 || !strings.HasPrefix(out, "seq,time,type,") {
		t.Fatalf("csv: %q %v", out, err)
	}
	if _, err := runErrand(t, "audit", "export", "--config", cfg, "--format", "xml"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

// TestServingRoleCannotRewriteTheAudit: the least-privilege roles of
// errand db roles: the serving role appends audit events but can neither
// change nor delete them, nor switch the append-only triggers off.
func TestServingRoleCannotRewriteTheAudit(t *testing.T) {
	u, cfg := auditDB(t, 3)
	var b [4]byte
	_, _ = rand.Read(b[:])
	app, aud := "errand_app_"+hex.EncodeToString(b[:]), "errand_aud_"+hex.EncodeToString(b[:])
	out, err := runErrand(t, "db", "roles", "--config", cfg, "--app-role", app, "--auditor-role", aud)
	if err != nil || !strings.Contains(out, "roles ready") {
		t.Fatalf("db roles: %q %v", out, err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(ctx, "RESET ROLE")
		for _, r := range []string{app, aud} {
			conn.Exec(ctx, "DROP OWNED BY "+r)
			conn.Exec(ctx, "DROP ROLE "+r)
		}
		conn.Close(ctx)
	})
	as := func(role, q string) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+role); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, q)
		return err
	}
	for _, q := range []string{
		"UPDATE audit_events SET type = 'x' WHERE seq = 1", "DELETE FROM audit_events WHERE seq = 1",
		"TRUNCATE audit_events", "ALTER TABLE audit_events DISABLE TRIGGER USER", "DROP TABLE audit_events",
	} {
		if err := as(app, q); err == nil || !(strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "must be owner")) {
			t.Errorf("serving role: %s: %v, want permission denied", q, err)
		}
	}
	for _, q := range []string{"SELECT count(*) FROM audit_events", "SELECT count(*) FROM tasks",
		`INSERT INTO revocations (audit_seq, jti, task_id, revoked_at, reason) VALUES (999, 'j', 't', now(), 'r')`} {
		if err := as(app, q); err != nil {
			t.Errorf("serving role: %s: %v", q, err)
		}
	}
	if err := as(aud, "SELECT count(*) FROM audit_events"); err != nil {
		t.Errorf("auditor role cannot read the audit: %v", err)
	}
	for _, q := range []string{"INSERT INTO audit_head (id, seq, hash) VALUES (2, 0, 'x')", "SELECT * FROM signing_keys", "UPDATE tasks SET status = 'closed'"} {
		if err := as(aud, q); err == nil {
			t.Errorf("auditor role: %s succeeded", q)
		}
	}
}

func TestAnchorLogsTheChainHead(t *testing.T) {
	u, _ := auditDB(t, 4)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var buf syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Anchor(st, time.Hour, slog.New(slog.NewJSONHandler(&buf, nil)))(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), `"msg":"audit anchor","seq":4`) {
		if time.Now().After(deadline) {
			t.Fatalf("no anchor logged: %s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, hash, _ := st.AuditHead(context.Background())
	if !strings.Contains(buf.String(), hash) {
		t.Fatal("the anchor does not carry the head's hash")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
