package jwt

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/broker"
)

// TestIDJAGSign: an ID-JAG verifies with a key of the published JWKS, has
// typ oauth-id-jag+jwt and exactly the draft's claims with act and
// task_id; Errand's own verifier refuses it, whatever its signature.
func TestIDJAGSign(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			now := time.Now().Truncate(time.Second)
			i := newIssuer(t, &memKeys{}, alg, func() time.Time { return now })
			g := broker.IDJAG{
				Subject: "alice", Act: broker.Ref{Issuer: "https://agents", Subject: "bot"},
				Audience: "https://as.example", ClientID: "errand-agents", Resource: "https://mcp.example/mcp",
				Scope: "docs.read", TaskID: "tsk_1", JTI: "jti-1", IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute),
			}
			raw, err := i.SignIDJAG(context.Background(), g)
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal(i.JWKS(), &set); err != nil {
				t.Fatal(err)
			}
			jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			h := jws.Signatures[0].Protected
			keys := set.Key(h.KeyID)
			if len(keys) != 1 || h.ExtraHeaders["typ"] != IDJAGType || h.Algorithm != alg {
				t.Fatalf("header %+v, %d keys of kid", h, len(keys))
			}
			payload, err := jws.Verify(keys[0])
			if err != nil {
				t.Fatal(err)
			}
			var c map[string]any
			if err := json.Unmarshal(payload, &c); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"iss": iss, "sub": "alice", "aud": "https://as.example", "client_id": "errand-agents", "jti": "jti-1",
				"iat": float64(now.Unix()), "exp": float64(now.Add(5 * time.Minute).Unix()),
				"resource": "https://mcp.example/mcp", "scope": "docs.read",
				"act": map[string]any{"sub": "bot", "iss": "https://agents"}, "task_id": "tsk_1",
			}
			gb, _ := json.Marshal(c)
			wb, _ := json.Marshal(want)
			if string(gb) != string(wb) {
				t.Fatalf("claims\n got %s\nwant %s", gb, wb)
			}
			if _, err := i.Verify(context.Background(), raw); err == nil || !strings.Contains(err.Error(), "typ") {
				t.Fatalf("Verify accepted an ID-JAG: %v", err)
			}
		})
	}
}

// TestIDJAGOf: an ID-JAG this issuer signed is recognised for revocation,
// expired or not, and nothing else is: an access token of the same keys,
// an ID-JAG of another issuer, a tampered one.
func TestIDJAGOf(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clock := now
	i := newIssuer(t, &memKeys{}, AlgEdDSA, func() time.Time { return clock })
	other := newIssuer(t, &memKeys{}, AlgEdDSA, func() time.Time { return clock })
	g := broker.IDJAG{Subject: "alice", Audience: "https://as.example", ClientID: "c", Resource: "https://mcp.example/mcp",
		TaskID: "tsk_1", JTI: "jti-1", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
	raw, err := i.SignIDJAG(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(time.Hour) // long expired
	if jti, err := i.IDJAGOf(context.Background(), raw); err != nil || jti != "jti-1" {
		t.Fatalf("IDJAGOf(own, expired) = %q, %v", jti, err)
	}
	foreign, err := other.SignIDJAG(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	at, err := i.Sign(context.Background(), sample(now))
	if err != nil {
		t.Fatal(err)
	}
	tampered := raw[:len(raw)-4] + "AAAA"
	for name, tok := range map[string]string{"another issuer's keys": foreign, "an access token": at, "tampered": tampered, "garbage": "a.b.c"} {
		if jti, err := i.IDJAGOf(context.Background(), tok); broker.CodeOf(err) != broker.ErrInvalidToken.Code {
			t.Errorf("IDJAGOf(%s) = %q, %v; want invalid_token", name, jti, err)
		}
	}
}

// TestSignSET: a Security Event Token verifies with the JWKS, has typ
// secevent+jwt and the claims it was given, with iss the issuer.
func TestSignSET(t *testing.T) {
	i := newIssuer(t, &memKeys{}, AlgES256, time.Now)
	now := time.Now().Truncate(time.Second)
	raw, err := i.SignSET(context.Background(), broker.SecurityEvent{Audience: "https://as.example", JTI: "rev-1", IssuedAt: now,
		Txn: "tsk_1", SubID: map[string]any{"format": "opaque", "id": "jti-1"}, Events: map[string]any{"urn:e": map[string]any{}}})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(i.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := jws.Signatures[0].Protected
	payload, err := jws.Verify(set.Key(h.KeyID)[0])
	if err != nil || h.ExtraHeaders["typ"] != SETType {
		t.Fatalf("verify: %v, typ %v", err, h.ExtraHeaders["typ"])
	}
	want := fmt.Sprintf(`{"iss":%q,"aud":"https://as.example","jti":"rev-1","iat":%d,"txn":"tsk_1","sub_id":{"format":"opaque","id":"jti-1"},"events":{"urn:e":{}}}`, iss, now.Unix())
	if string(payload) != want {
		t.Fatalf("claims\n got %s\nwant %s", payload, want)
	}
	if _, err := i.IDJAGOf(context.Background(), raw); err == nil {
		t.Fatal("a SET passes for an ID-JAG")
	}
}
