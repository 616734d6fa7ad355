package resource

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

type fixedCredential struct{}

func (fixedCredential) Token(context.Context) (string, error) { return "unused", nil }

// TestS02TokenOutlivingRetentionIsRefused: a revoked jti is remembered
// for Retention; a token that lives longer could be accepted again once
// its revocation is forgotten (or after a restart), so it is refused
// outright, as the TypeScript verifier refuses it. Found by review: a 2 h
// token revoked at +5 min was accepted again from +65 min.
func TestS02TokenOutlivingRetentionIsRefused(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	clock := t0
	v, err := New(Config{Issuer: "https://errand.test", Audience: "https://api.example.test",
		Credential: fixedCredential{}, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	v.keys.keys = map[string]publicKey{"k1": {alg: "EdDSA", key: pub}}
	v.freshFor(t0.Add(24 * time.Hour)) // the feed is current throughout
	sign := func(jti string, life time.Duration) string {
		tok := gojwt.NewWithClaims(gojwt.SigningMethodEdDSA, gojwt.MapClaims{
			"iss": "https://errand.test", "aud": "https://api.example.test", "sub": "alice", "client_id": "bot",
			"scope": "github.repo.read:acme/**", "task_id": "tsk_1", "jti": jti,
			"iat": t0.Unix(), "nbf": t0.Unix(), "exp": t0.Add(life).Unix(),
		})
		tok.Header["typ"], tok.Header["kid"] = "at+jwt", "k1"
		raw, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	try := func(raw string) error {
		r := httptest.NewRequest("GET", "https://api.example.test/x", nil)
		r.Header.Set("Authorization", "Bearer "+raw)
		_, err := v.Verify(context.Background(), r)
		return err
	}
	if err := try(sign("short", 5*time.Minute)); err != nil {
		t.Fatalf("a 5 min token: %v", err)
	}
	long := sign("long", 2*time.Hour)
	if err := try(long); err == nil || !strings.Contains(err.Error(), "Retention") {
		t.Fatalf("a 2 h token with a 1 h Retention: %v, want refused", err)
	}
	// And still after its revocation has been pruned.
	clock = t0.Add(5 * time.Minute)
	v.apply([]revocation{{Seq: 1, JTI: "long", TaskID: "tsk_1", RevokedAt: clock.Format(time.RFC3339Nano)}}, 1)
	clock = t0.Add(66 * time.Minute)
	v.prune()
	if err := try(long); err == nil {
		t.Fatal("a revoked 2 h token accepted once its revocation was forgotten")
	}
}
