package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/postgres"
)

// TestH07RolesCoverEveryTable: after every migration, each table of the
// schema is one roles.go names, and errand db roles gives the serving
// role and the auditor role exactly the privileges listed there, nothing
// more (in particular never UPDATE, DELETE or TRUNCATE of the audit). A
// migration that adds a table without adding it to roles.go fails here.
func TestH07RolesCoverEveryTable(t *testing.T) {
	ctx := context.Background()
	st := migratedStore(t)
	rows, err := st.Pool().Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{}
	for _, g := range postgres.Grants() {
		want[g[0]] = [2]string{g[1], g[2]}
	}
	for _, tbl := range tables {
		if _, ok := want[tbl]; !ok {
			t.Errorf("table %s, created by a migration, is not in store/postgres/roles.go's grants: "+
				"the serving role could not use it and the auditor role's access is undecided", tbl)
		}
	}
	for tbl := range want {
		if !slices.Contains(tables, tbl) {
			t.Errorf("roles.go grants rights on %s, which no migration creates", tbl)
		}
	}

	var b [4]byte
	_, _ = rand.Read(b[:])
	app, aud := "errand_app_"+hex.EncodeToString(b[:]), "errand_aud_"+hex.EncodeToString(b[:])
	t.Cleanup(func() {
		for _, r := range []string{app, aud} {
			st.Pool().Exec(ctx, "DROP OWNED BY "+r)
			st.Pool().Exec(ctx, "DROP ROLE "+r)
		}
	})
	if err := st.CreateRoles(ctx, app, aud); err != nil {
		t.Fatal(err)
	}
	all := []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
	for _, tbl := range tables {
		for i, role := range []string{app, aud} {
			granted := strings.Split(want[tbl][i], ", ")
			if role == app && want[tbl][0] == "" {
				// Every table is Errand's, and serve uses each one.
				t.Errorf("the serving role has no privilege listed on %s", tbl)
			}
			for _, p := range all {
				var has bool
				if err := st.Pool().QueryRow(ctx, `SELECT has_table_privilege($1, $2, $3)`, role, "public."+tbl, p).Scan(&has); err != nil {
					t.Fatal(err)
				}
				if has != slices.Contains(granted, p) {
					t.Errorf("%s on %s: %s is %v, want %v (roles.go: %q)", role, tbl, p, has, !has, want[tbl][i])
				}
			}
		}
	}
}

// TestH07CreateRolesRefusesAnUnknownTable: a table errand db roles does
// not know (a schema migrated by a newer errand) is refused by name, not
// left unreachable to both roles.
func TestH07CreateRolesRefusesAnUnknownTable(t *testing.T) {
	ctx := context.Background()
	st := migratedStore(t)
	if _, err := st.Pool().Exec(ctx, `CREATE TABLE future_feature (id bigint PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	app, aud := "errand_app_"+hex.EncodeToString(b[:]), "errand_aud_"+hex.EncodeToString(b[:])
	t.Cleanup(func() {
		for _, r := range []string{app, aud} {
			st.Pool().Exec(ctx, "DROP OWNED BY "+r)
			st.Pool().Exec(ctx, "DROP ROLE "+r)
		}
	})
	if err := st.CreateRoles(ctx, app, aud); err == nil || !strings.Contains(err.Error(), "future_feature") {
		t.Fatalf("CreateRoles with an unknown table: %v", err)
	}
	var n int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname IN ($1, $2)`, app, aud).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d roles created by a refused db roles (%v)", n, err)
	}
}

// migratedStore opens a fresh database of its own, migrated.
func migratedStore(t *testing.T) *postgres.Store {
	t.Helper()
	u := testpg.NewDatabase(t)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}
