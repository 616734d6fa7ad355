package signin_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/signin"
)

// BenchmarkMiddleware is the cost a session adds to a page: one read of
// the session row by its digest (and at most one write a minute).
func BenchmarkMiddleware(b *testing.B) {
	for name, st := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			m, err := signin.New(signin.Config{Store: st, PublicURL: "https://errand.example", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			rec := httptest.NewRecorder()
			s, err := m.Start(context.Background(), rec, broker.Principal{Issuer: "https://idp.example", Subject: "alice", Kind: broker.KindUser, Groups: []string{"eng"}})
			if err != nil {
				b.Fatal(err)
			}
			h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := signin.FromContext(r.Context()); !ok {
					b.Fatal("no session")
				}
			}))
			req := httptest.NewRequest(http.MethodGet, "/ui/", nil)
			req.AddCookie(&http.Cookie{Name: m.CookieName(), Value: s.ID})
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}

func benchStores(b *testing.B) map[string]signin.Store { return storesTB(b) }
