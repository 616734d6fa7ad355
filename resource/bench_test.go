package resource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/errandhq/errand/internal/errandtest"
)

// BenchmarkVerifyOffline is the cost of one request's check with the feed
// current: header, JWKS key from memory, EdDSA signature, claims,
// revocation set; no I/O.
func BenchmarkVerifyOffline(b *testing.B) {
	e := errandtest.Start(b, errandtest.Options{})
	v := newVerifier(b, e, nil)
	ready(b, v)
	task := approvedTask(b, e, "github.repo.read:acme/**")
	tok := mint(b, e, task, 300, nil, "github.repo.read:acme/api")
	req := httptest.NewRequest("GET", "https://api.example.test/repo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	ctx := context.Background()
	if _, err := v.Verify(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Require", func(b *testing.B) {
		h := v.Require("github.repo.read", "acme/api")(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}
