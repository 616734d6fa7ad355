package identity

import (
	"context"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testoidc"
)

// A verified token is served from the cache until its exp — even while its
// issuer is down — and never after; failures are never cached.
func TestVerificationCache(t *testing.T) {
	idp := testoidc.New(t)
	now := time.Now()
	clock := func() time.Time { return now }
	v, err := New(Config{Self: "https://errand.test", Now: clock,
		Issuers: []Issuer{{URL: idp.URL, Audience: "errand", Kind: broker.KindAgent}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	claims := idp.Claims("bot", "errand")
	claims["exp"] = now.Add(10 * time.Minute).Unix()
	tok := idp.Sign(t, idp.Keys()[0], nil, claims)
	if p, err := v.Verify(ctx, tok); err != nil || p.Subject != "bot" {
		t.Fatalf("first verification: %v %v", p, err)
	}
	idp.SetDown(true)
	hits := idp.JWKSHits()
	if p, err := v.Verify(ctx, tok); err != nil || p.Subject != "bot" || p.Kind != broker.KindAgent {
		t.Fatalf("a cached verification: %v %v", p, err)
	}
	if idp.JWKSHits() != hits {
		t.Fatal("a cached verification fetched keys")
	}
	// One byte changed in the signature is another token: verified, refused.
	forged := tok[:len(tok)-2] + "AA"
	if forged == tok {
		forged = tok[:len(tok)-2] + "BB"
	}
	if _, err := v.Verify(ctx, forged); err == nil {
		t.Fatal("a forged token was served from the cache")
	}
	now = now.Add(11 * time.Minute)
	if _, err := v.Verify(ctx, tok); err == nil {
		t.Fatal("an expired token was served from the cache")
	}
}

func TestVerificationCacheStaysBounded(t *testing.T) {
	c := newTokenCache(4)
	now := time.Now()
	for i := 0; i < 10; i++ {
		c.put(tokenKey(string(rune('a'+i))), broker.Principal{Subject: "x"}, now.Add(time.Minute), now)
		if len(c.entries) > 4 {
			t.Fatalf("%d entries in a cache of 4", len(c.entries))
		}
	}
	if _, ok := c.get(tokenKey("j"), now); !ok {
		t.Fatal("the newest entry is missing")
	}
}
