package sqlite_test

import (
	"context"
	"strings"
	"testing"

	"github.com/errandhq/errand/store/sqlite"
)

// TestX05BindingIsFixed: as on PostgreSQL, a credential's DPoP binding
// and a task's DPoP requirement never change once written.
func TestX05BindingIsFixed(t *testing.T) {
	st := open(t, sqlite.Memory)
	ctx := context.Background()
	if _, err := st.DB().ExecContext(ctx, `INSERT INTO tasks (id, version, status, agent_iss, agent_sub, user_iss, user_sub,
		goal, scopes, audiences, risk, created_at, expires_at, require_dpop) VALUES ('tsk_x05fixed', 1, 'approved', 'a', 'b',
		'c', 'd', 'g', '["x"]', '["y"]', 'low', 0, 9999999999999999, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DB().ExecContext(ctx, `INSERT INTO credentials (jti, task_id, kind, agent_iss, agent_sub, user_iss,
		user_sub, scopes, audience, issued_at, expires_at, jkt) VALUES ('jti_x05fixed', 'tsk_x05fixed', 'jwt', 'a', 'b',
		'c', 'd', '["x"]', 'y', 0, 60000000, 'thumb')`); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{
		"UPDATE credentials SET jkt = '' WHERE jti = 'jti_x05fixed'":       "binding may not change",
		"UPDATE credentials SET jkt = 'other' WHERE jti = 'jti_x05fixed'":  "binding may not change",
		"UPDATE tasks SET require_dpop = 0 WHERE id = 'tsk_x05fixed'":      "DPoP requirement may not change",
		"UPDATE credentials SET revoked_at = 1 WHERE jti = 'jti_x05fixed'": "",
	} {
		_, err := st.DB().ExecContext(ctx, q)
		if want == "" && err != nil {
			t.Errorf("%s: %v, want it allowed", q, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: err = %v, want the trigger to refuse", q, err)
		}
	}
}
