package resource

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary Authorization values to Verify: it never
// panics, never fetches (the key set is held and the cool-down running),
// and never accepts anything but a token signed by the held key.
func FuzzVerify(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	v, err := New(Config{Issuer: "https://errand.test", Audience: "https://api.test", Credential: idToken(func() string { return "" })})
	if err != nil {
		f.Fatal(err)
	}
	v.keys.keys = map[string]publicKey{"k1": {alg: "EdDSA", key: pub}}
	v.keys.lastTry = time.Now()
	v.freshFor(time.Now().Add(time.Hour))
	f.Add("Bearer eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImsxIn0.e30.AAAA")
	f.Add("DPoP a.b.c")
	f.Add("Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0Iiwia2lkIjoiazEifQ.e30.")
	f.Add("bearer  x")
	f.Fuzz(func(t *testing.T, auth string) {
		req := httptest.NewRequest("GET", "https://api.test/", nil)
		req.Header.Set("Authorization", auth)
		if tok, err := v.Verify(context.Background(), req); err == nil {
			t.Fatalf("accepted %q: %+v", auth, tok)
		}
		if v.keys.fetches.Load() != 0 {
			t.Fatal("a request fetched the JWKS within the cool-down")
		}
	})
}
