package jwt

import (
	"context"
	"encoding/json"
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
			if IsOwnToken(raw) {
				t.Fatal("an ID-JAG passes for an access token")
			}
		})
	}
}
