package signin_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/signin"
	"github.com/errandhq/errand/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

// stores opens the session store on each real backend, migrated.
func stores(t *testing.T) map[string]signin.Store {
	t.Helper()
	return storesTB(t)
}

func storesTB(t testing.TB) map[string]signin.Store {
	t.Helper()
	out := map[string]signin.Store{}
	lite, err := sqlite.Open(context.Background(), sqlite.Memory)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close() })
	if _, err := lite.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	out["sqlite"] = &signin.SQLStore{DB: lite.DB()}
	pg := testpg.Store(t)
	db := stdlib.OpenDBFromPool(pg.Pool())
	t.Cleanup(func() { db.Close() })
	out["postgres"] = &signin.SQLStore{DB: db}
	return out
}

func TestSessionStore(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
			user := broker.Principal{Issuer: "https://idp.example/" + name, Subject: "alice", Kind: broker.KindUser,
				Groups: []string{"eng", "auditors"}, Auditor: true}
			rec := signin.Record{IDHash: "h1-" + name, User: user, CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(time.Hour)}
			if err := st.CreateSession(ctx, rec); err != nil {
				t.Fatal(err)
			}
			got, err := st.Session(ctx, rec.IDHash)
			if err != nil {
				t.Fatal(err)
			}
			if got.User.Subject != "alice" || got.User.Issuer != user.Issuer || !got.User.Auditor || got.User.Admin ||
				len(got.User.Groups) != 2 || got.User.Kind != broker.KindUser || !got.CreatedAt.Equal(now) || !got.ExpiresAt.Equal(rec.ExpiresAt) {
				t.Fatalf("read back %+v", got)
			}
			if err := st.TouchSession(ctx, rec.IDHash, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if got, _ := st.Session(ctx, rec.IDHash); !got.LastSeen.Equal(now.Add(time.Minute)) {
				t.Fatalf("last_seen %v", got.LastSeen)
			}
			if _, err := st.Session(ctx, "nope"); !errors.Is(err, broker.ErrNotFound) {
				t.Fatalf("unknown session: %v", err)
			}
			if n, err := st.DeleteUserSessions(ctx, user.Ref()); err != nil || n != 1 {
				t.Fatalf("delete user sessions: %d %v", n, err)
			}
			f := signin.Flow{StateHash: "s-" + name, Issuer: user.Issuer, Nonce: "n", Verifier: "v", RedirectURI: "https://e/ui/callback",
				ReturnTo: "/ui/", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
			if err := st.CreateFlow(ctx, f); err != nil {
				t.Fatal(err)
			}
			if got, err := st.TakeFlow(ctx, f.StateHash); err != nil || got.Nonce != "n" || got.Issuer != f.Issuer {
				t.Fatalf("take flow: %+v %v", got, err)
			}
			if _, err := st.TakeFlow(ctx, f.StateHash); !errors.Is(err, broker.ErrNotFound) {
				t.Fatalf("a flow is taken once: %v", err)
			}
			old := signin.Record{IDHash: "old-" + name, User: user, CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(time.Second)}
			if err := st.CreateSession(ctx, old); err != nil {
				t.Fatal(err)
			}
			if n, err := st.DeleteExpired(ctx, now.Add(time.Hour)); err != nil || n != 1 {
				t.Fatalf("delete expired: %d %v", n, err)
			}
		})
	}
}
