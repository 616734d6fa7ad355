package sqlite_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandhq/errand/store/sqlite"
	"github.com/errandhq/errand/store/storetest"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformanceFile(t *testing.T) {
	st := open(t, filepath.Join(t.TempDir(), "errand.db"))
	var mode string
	if err := st.DB().QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	storetest.Run(t, func(*testing.T) storetest.Store { return hooked{st} })
}

func TestConformanceMemory(t *testing.T) {
	st := open(t, sqlite.Memory)
	storetest.Run(t, func(*testing.T) storetest.Store { return hooked{st} })
}

// hooked adds the suite's test-only hooks to the store.
type hooked struct{ *sqlite.Store }

// Unrevoke tries to clear a credential's revocation behind the broker's
// back; the database must refuse.
func (h hooked) Unrevoke(ctx context.Context, jti string) error {
	_, err := h.DB().ExecContext(ctx, `UPDATE credentials SET revoked_at = NULL WHERE jti = $1`, jti)
	return err
}

func TestAuditEventsAreAppendOnly(t *testing.T) {
	st := open(t, filepath.Join(t.TempDir(), "errand.db"))
	ctx := context.Background()
	if _, err := st.DB().ExecContext(ctx, `INSERT INTO audit_events (seq, time, type, actor_kind, detail, hash) VALUES (999, 0, 'x', 'anonymous', '{}', 'h')`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"UPDATE audit_events SET type = 'y'", "DELETE FROM audit_events"} {
		if _, err := st.DB().ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only trigger to refuse", q, err)
		}
	}
}

func TestMigrateIsIdempotentAndRefusesNewerSchema(t *testing.T) {
	st := open(t, filepath.Join(t.TempDir(), "errand.db"))
	ctx := context.Background()
	if n, err := st.Migrate(ctx); err != nil || n != 0 {
		t.Fatalf("second Migrate: %d %v", n, err)
	}
	if _, err := st.DB().ExecContext(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("Migrate on a newer schema: %v", err)
	}
}

func TestPathFromURL(t *testing.T) {
	for in, want := range map[string]string{"sqlite:///var/lib/errand.db": "/var/lib/errand.db", "sqlite://errand.db": "errand.db", "sqlite://:memory:": ":memory:"} {
		if got, ok := sqlite.PathFromURL(in); !ok || got != want {
			t.Errorf("PathFromURL(%q) = %q, %v", in, got, ok)
		}
	}
	if _, ok := sqlite.PathFromURL("postgres://x"); ok {
		t.Error("postgres URL taken for sqlite")
	}
}
