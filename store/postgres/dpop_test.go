package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/errandhq/errand/internal/testing/testpg"
)

// TestX05BindingIsFixed: whoever writes, a credential's DPoP binding and a
// task's DPoP requirement never change once written (migration 00013): a
// bound credential never becomes a bearer one.
func TestX05BindingIsFixed(t *testing.T) {
	st := testpg.Store(t)
	ctx := context.Background()
	if _, err := st.Pool().Exec(ctx, `INSERT INTO tasks (id, version, status, agent_iss, agent_sub, user_iss, user_sub,
		goal, scopes, audiences, risk, created_at, expires_at, require_dpop) VALUES ('tsk_x05fixed', 1, 'approved', 'a', 'b',
		'c', 'd', 'g', '{x}', '{y}', 'low', now(), now() + interval '1 hour', true)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO credentials (jti, task_id, kind, agent_iss, agent_sub, user_iss,
		user_sub, scopes, audience, issued_at, expires_at, jkt) VALUES ('jti_x05fixed', 'tsk_x05fixed', 'jwt', 'a', 'b',
		'c', 'd', '{x}', 'y', now(), now() + interval '1 minute', 'thumb')`); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{
		"UPDATE credentials SET jkt = '' WHERE jti = 'jti_x05fixed'":           "binding may not change",
		"UPDATE credentials SET jkt = 'other' WHERE jti = 'jti_x05fixed'":      "binding may not change",
		"UPDATE tasks SET require_dpop = false WHERE id = 'tsk_x05fixed'":      "DPoP requirement may not change",
		"UPDATE credentials SET revoked_at = now() WHERE jti = 'jti_x05fixed'": "",
	} {
		_, err := st.Pool().Exec(ctx, q)
		if want == "" && err != nil {
			t.Errorf("%s: %v, want it allowed", q, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: err = %v, want the trigger to refuse", q, err)
		}
	}
}
