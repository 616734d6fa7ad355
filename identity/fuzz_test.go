package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testoidc"
)

// FuzzVerify: no input panics identity verification, and nothing but the
// valid token (up to base64 spelling) yields a principal.
func FuzzVerify(f *testing.F) {
	idp := testoidc.New(f)
	v, err := New(Config{Self: "https://errand.test", Issuers: []Issuer{{URL: idp.URL, Audience: "errand", Kind: broker.KindAgent}}})
	if err != nil {
		f.Fatal(err)
	}
	valid := idp.Token(f, "agent-1", "errand", nil)
	if _, err := v.Verify(context.Background(), valid); err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(testoidc.Forge(f, map[string]any{"alg": "none"}, idp.Claims("agent-1", "errand"), nil))
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := v.Verify(context.Background(), raw)
		if err != nil {
			if c := broker.CodeOf(err); c != "invalid_token" && c != "token_not_accepted" && c != "unavailable" {
				t.Fatalf("unexpected error code %q: %v", c, err)
			}
			return
		}
		if !sameSegments(raw, valid) {
			t.Fatalf("a mutated token verified as %+v: %q", p, raw)
		}
	})
}

func sameSegments(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	if len(as) != 3 || len(bs) != 3 {
		return false
	}
	for i := range as {
		x, err1 := base64.RawURLEncoding.DecodeString(as[i])
		y, err2 := base64.RawURLEncoding.DecodeString(bs[i])
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}
