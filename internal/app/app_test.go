package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

// TestWiringFollowsTheBackend: what a driver lacks is nil in its Backend,
// and New wires the parts that need it only where it is there — the
// status cache (and its metrics) on PostgreSQL, the polling hub and no
// schema check on SQLite — and serves the sign-in, pages and API on both.
func TestWiringFollowsTheBackend(t *testing.T) {
	for _, tc := range []struct {
		name     string
		open     func(t *testing.T) *Backend
		replicas bool // LISTEN/NOTIFY, feed acks, schema check
	}{
		{"sqlite", func(t *testing.T) *Backend {
			st, err := sqlite.Open(context.Background(), sqlite.Memory)
			if err != nil {
				t.Fatal(err)
			}
			return SQLite(st)
		}, false},
		{"postgres", func(t *testing.T) *Backend {
			b, err := Open(context.Background(), testpg.URL(t))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.open(t)
			defer b.Close()
			if _, err := b.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := b.Listen != nil && b.Acks != nil && b.CheckSchema != nil; got != tc.replicas {
				t.Fatalf("Listen, Acks, CheckSchema set: %v, want %v", got, tc.replicas)
			}
			if b.Store == nil || b.Keys == nil || b.Outbox == nil || b.Deliveries == nil || b.Pending == nil || b.SignIn == nil {
				t.Fatalf("a store every driver has is missing: %+v", b)
			}
			if tc.replicas {
				if err := b.CheckSchema(context.Background()); err != nil {
					t.Fatalf("the schema just migrated: %v", err)
				}
			}
			cfg := &config.Config{
				PublicURL: "http://127.0.0.1:1", DatabaseURL: "unused", SystemSecret: strings.Repeat("s", 32),
				Issuers: []config.Issuer{
					{URL: "https://agents.example.test", Audience: "errand", Kind: "agent"},
					{URL: "https://users.example.test", Audience: "errand", Kind: "user", GroupsClaim: "groups"},
				},
				Actions:   []config.Action{{Name: "github.repo.read", Class: "read", Risk: "low"}},
				Audiences: []config.Audience{{URL: "https://api.github.com", AnyIntrospector: true}},
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			a, err := New(context.Background(), cfg, b, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			families, err := a.Registry.Gather()
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]bool{}
			for _, f := range families {
				names[f.GetName()] = true
			}
			for _, n := range []string{"errand_tasks_pending", "errand_quick_mints_total", "errand_revocation_feed_reads_total", "errand_audit_anchor_interval_seconds"} {
				if !names[n] {
					t.Errorf("metric %s not registered", n)
				}
			}
			if names["errand_introspection_cache_hits_total"] != tc.replicas {
				t.Errorf("status cache wired: %v, want %v", names["errand_introspection_cache_hits_total"], tc.replicas)
			}
			// sweeper, outbox, hub, feed, keys, refusal summaries, anchor,
			// sign-in; and the status cache with replicas.
			if want := 8 + map[bool]int{true: 1}[tc.replicas]; len(a.Workers) != want {
				t.Errorf("%d workers, want %d", len(a.Workers), want)
			}
			h := a.Handler()
			// The API, and the pages behind the sign-in.
			for path, want := range map[string]int{"/healthz": http.StatusOK, "/ui/": http.StatusSeeOther} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				if rec.Code != want {
					t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
				}
				if want == http.StatusSeeOther && !strings.HasPrefix(rec.Header().Get("Location"), "/ui/login") {
					t.Errorf("GET %s: to %q, want the sign-in", path, rec.Header().Get("Location"))
				}
			}
		})
	}
}
