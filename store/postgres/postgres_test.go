package postgres_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/postgres"
	"github.com/errandhq/errand/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return hooked{testpg.Store(t)} })
}

// hooked adds the suite's test-only hooks to the store.
type hooked struct{ *postgres.Store }

// Unrevoke tries to clear a credential's revocation behind the broker's
// back; the database must refuse.
func (h hooked) Unrevoke(ctx context.Context, jti string) error {
	_, err := h.Pool().Exec(ctx, `UPDATE credentials SET revoked_at = NULL WHERE jti = $1`, jti)
	return err
}

func TestAuditEventsAreAppendOnly(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	for _, q := range []string{"UPDATE audit_events SET type = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"} {
		if _, err := st.Pool().Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only trigger to refuse", q, err)
		}
	}
}

// TestTasksAreKept: with no foreign key from credentials, nothing may take
// a task away from under its credentials, the table's owner included.
func TestTasksAreKept(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	if _, err := st.Pool().Exec(ctx, `INSERT INTO tasks (id, version, status, agent_iss, agent_sub, user_iss, user_sub,
		goal, scopes, audiences, risk, created_at, expires_at) VALUES ('tsk_kept', 1, 'approved', 'a', 'b', 'c', 'd', 'g',
		'{x}', '{y}', 'low', now(), now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"DELETE FROM tasks WHERE id = 'tsk_kept'",
		"TRUNCATE tasks CASCADE",
		"UPDATE tasks SET id = 'tsk_other' WHERE id = 'tsk_kept'",
	} {
		if _, err := st.Pool().Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "never deleted") {
			t.Errorf("%s: err = %v, want the trigger to refuse", q, err)
		}
	}
	var n int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM tasks WHERE id = 'tsk_kept'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("task count %d, %v", n, err)
	}
	// Every other update still works, an id set to itself included.
	if _, err := st.Pool().Exec(ctx, `UPDATE tasks SET id = 'tsk_kept', revoking = true WHERE id = 'tsk_kept'`); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateIsIdempotentAndRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	u := testpg.NewDatabase(t)
	st, err := postgres.Open(ctx, postgres.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CheckSchema(ctx); err == nil {
		t.Fatal("CheckSchema passed on an empty database")
	}
	if n, err := st.Migrate(ctx); err != nil || n == 0 {
		t.Fatalf("first Migrate: %d, %v", n, err)
	}
	if n, err := st.Migrate(ctx); err != nil || n != 0 {
		t.Fatalf("second Migrate: %d, %v", n, err)
	}
	if err := st.CheckSchema(ctx); err != nil {
		t.Fatalf("CheckSchema after Migrate: %v", err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("Migrate on a newer schema: %v", err)
	}
}

func TestOpenRefusesSimpleProtocol(t *testing.T) {
	u := testpg.URL(t)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	_, err := postgres.Open(context.Background(), postgres.Config{URL: u + sep + "default_query_exec_mode=simple_protocol"})
	if err == nil || !strings.Contains(err.Error(), "simple_protocol") {
		t.Fatalf("err = %v", err)
	}
}

func TestMaskURL(t *testing.T) {
	got := postgres.MaskURL("dial postgres://errand:s3cret@db:5432/errand failed")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "errand:xxxxx@db") {
		t.Fatalf("MaskURL = %q", got)
	}
}

// TestPolicyBackstopsHoldForRawSQL: whoever writes, a task's budget never
// changes and a used step-up never comes back.
func TestPolicyBackstopsHoldForRawSQL(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO tasks (id, version, status, agent_iss, agent_sub, user_iss, user_sub, goal, scopes, audiences, risk,
			created_at, expires_at, max_credentials) VALUES ('tsk_raw', 1, 'approved', 'a', 'b', 'c', 'd', 'g',
			'{x}', '{y}', 'low', now(), now() + interval '1 hour', 2)`,
		`INSERT INTO step_ups (id, task_id, agent_iss, agent_sub, user_iss, user_sub, scopes, audience, request_hash,
			policies, reasons, status, created_at, expires_at) VALUES ('apr_raw', 'tsk_raw', 'a', 'b', 'c', 'd', '{x}', 'y',
			'h', '{}', '{}', 'used', now(), now() + interval '1 hour')`,
	} {
		if _, err := st.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`UPDATE tasks SET max_credentials = 100 WHERE id = 'tsk_raw'`,
		`UPDATE tasks SET max_resources = 1 WHERE id = 'tsk_raw'`,
		`UPDATE tasks SET user_groups = '{admins}' WHERE id = 'tsk_raw'`,
		`UPDATE step_ups SET status = 'approved' WHERE id = 'apr_raw'`,
		`UPDATE step_ups SET request_hash = 'other' WHERE id = 'apr_raw'`,
	} {
		if _, err := st.Pool().Exec(ctx, q); err == nil {
			t.Errorf("accepted: %s", q)
		}
	}
}
