package httpapi

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/internal/testoidc"
)

// TestIdentityTokenAttacks: every forged or unfit identity token is 401
// invalid_token, changes nothing and is audited.
func TestIdentityTokenAttacks(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	claims := func(extra map[string]any) map[string]any {
		c := e.agents.Claims("agent-1", audience)
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	rsaKey := e.agents.Keys()[0]
	ecKey := e.agents.Keys()[1]
	pubDER, err := x509.MarshalPKIXPublicKey(rsaKey.Priv.Public().(*rsa.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	cases := []struct {
		name  string
		token func() string
		code  string
	}{
		{"alg none, empty signature", func() string {
			return testoidc.Forge(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), nil)
		}, "invalid_token"},
		{"alg None, non-empty signature", func() string {
			return testoidc.Forge(t, map[string]any{"alg": "None", "kid": "rsa-1"}, claims(nil), []byte("sig"))
		}, "invalid_token"},
		{"alg NONE", func() string {
			return testoidc.Forge(t, map[string]any{"alg": "NONE"}, claims(nil), nil)
		}, "invalid_token"},
		{"HS256 keyed with the issuer's RSA public key (PEM)", func() string {
			return testoidc.HS256(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(nil), pubPEM)
		}, "invalid_token"},
		{"HS256 keyed with the RSA public key (DER)", func() string {
			return testoidc.HS256(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(nil), pubDER)
		}, "invalid_token"},
		{"ES256 header naming the RSA key", func() string {
			k := ecKey
			k.KID = "rsa-1"
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"expired", func() string {
			return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iat": now.Add(-time.Hour).Unix(), "exp": now.Add(-time.Second).Unix()}))
		}, "invalid_token"},
		{"no exp", func() string { return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"exp": nil})) }, "invalid_token"},
		{"iat in the future", func() string {
			return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iat": now.Add(10 * time.Minute).Unix(), "exp": now.Add(15 * time.Minute).Unix()}))
		}, "invalid_token"},
		{"lifetime over the maximum", func() string {
			return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"exp": now.Add(48 * time.Hour).Unix()}))
		}, "invalid_token"},
		{"wrong audience", func() string { return e.agents.Token(t, "agent-1", "some-other-client", nil) }, "invalid_token"},
		{"empty audience", func() string { return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"aud": []string{}})) }, "invalid_token"},
		{"untrusted issuer", func() string { return e.untrusted.Token(t, "agent-1", audience, nil) }, "invalid_token"},
		{"iss of a trusted issuer signed by an untrusted key", func() string {
			c := claims(nil)
			return e.untrusted.Sign(t, e.untrusted.Keys()[0], nil, c)
		}, "invalid_token"},
		{"issuer with a trailing slash", func() string {
			return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iss": e.agents.URL + "/"}))
		}, "invalid_token"},
		{"issuer with a case variant", func() string {
			return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iss": strings.ToUpper(e.agents.URL)}))
		}, "invalid_token"},
		{"unknown kid", func() string {
			k := rsaKey
			k.KID = "' UNION SELECT 'k'--"
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"crit header", func() string {
			return e.agents.Sign(t, rsaKey, map[string]any{"crit": []string{"x-unknown"}, "x-unknown": 1}, claims(nil))
		}, "invalid_token"},
		{"JWE-like five segments", func() string { return "a.b.c.d.e" }, "invalid_token"},
		{"bad base64", func() string { return "!!!.@@@.###" }, "invalid_token"},
		{"9 KB token", func() string { return "eyJ" + strings.Repeat("A", 9<<10) + ".e.e" }, "invalid_token"},
		{"missing sub", func() string { return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"sub": nil})) }, "invalid_token"},
		{"an access-token typ from a trusted issuer", func() string {
			return e.agents.Sign(t, rsaKey, map[string]any{"typ": "at+jwt"}, claims(nil))
		}, "token_not_accepted"},
		{"iss is Errand itself", func() string {
			return e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iss": publicURL}))
		}, "token_not_accepted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			r := e.do("POST", "/v1/tasks", c.token(), map[string]any{
				"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub},
			})
			e.refused(before, r, 401, c.code)
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	t.Run("no Authorization header", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.refused(before, e.do("POST", "/v1/tasks", "", map[string]any{}), 401, "invalid_token")
	})
}

// TestKindsAreDisjoint: a user-issuer token whose sub equals an agent's
// is a different principal and cannot act as that agent (J10).
func TestKindsAreDisjoint(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-7", "alice", "github.repo.read:acme/**")
	before := e.snapshot()
	r := e.do("POST", "/v1/tasks/"+id+"/tokens", e.users.Token(t, "agent-7", audience, nil),
		map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub})
	e.refused(before, r, 403, "wrong_principal_kind")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/close", e.resources.Token(t, "agent-7", audience, nil), nil), 403, "wrong_principal_kind")
}

// TestUnknownKidFloodIsRateLimited: random kids never make Errand hammer
// the identity provider's JWKS (J04), and valid tokens keep verifying.
func TestUnknownKidFloodIsRateLimited(t *testing.T) {
	e := newEnv(t)
	e.mustStatus(e.do("GET", "/v1/tasks", e.agent("agent-1"), nil), 200) // discovery + first fetch
	hits := e.agents.JWKSHits()
	k := e.agents.Keys()[0]
	for i := 0; i < 50; i++ {
		k.KID = "random-" + string(rune('a'+i%26)) + strings.Repeat("x", i)
		tok := e.agents.Sign(t, k, nil, e.agents.Claims("agent-1", audience))
		if r := e.do("GET", "/v1/tasks", tok, nil); r.Status != 401 {
			t.Fatalf("unknown kid: %d", r.Status)
		}
	}
	if got := e.agents.JWKSHits() - hits; got > 1 {
		t.Fatalf("%d JWKS fetches for 50 unknown kids, want at most 1 per cool-down", got)
	}
	e.mustStatus(e.do("GET", "/v1/tasks", e.agent("agent-1"), nil), 200)
}

// TestIdentityProviderDownIsUnavailableNotUnauthorized: an unreachable
// issuer is an outage (503), never a 401.
func TestIdentityProviderDownIsUnavailableNotUnauthorized(t *testing.T) {
	e := newEnv(t)
	e.agents.SetDown(true)
	r := e.do("GET", "/v1/tasks", e.agent("agent-1"), nil)
	if r.Status != 503 || r.str("code") != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("IdP down: %d %s", r.Status, r.Raw)
	}
}

// TestSameSubAtAnotherTrustedUserIssuerCannotApprove: with two trusted
// user issuers, "alice" at one is not "alice" at the other (J10).
func TestSameSubAtAnotherTrustedUserIssuerCannotApprove(t *testing.T) {
	e := newEnvWith(t, envOptions{twoUserIssuers: true})
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": e.users.URL + "#alice", "goal": "g", "scopes": []string{"github.repo.read:acme/api"},
		"audiences": []string{apiGitHub},
	}), 201)
	id := r.str("id")
	if r.str("on_behalf_of") != e.users.URL+"#alice" {
		t.Fatalf("on_behalf_of = %q", r.str("on_behalf_of"))
	}
	before := e.snapshot()
	other := e.users2.Token(t, "alice", audience, map[string]any{"groups": []string{"eng"}})
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", other, nil), 403, "approval_forbidden")
	// Ambiguous on_behalf_of is refused rather than guessed.
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub},
	}), 400, "invalid_request")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), nil), 200)
}

// TestJWKSOutageAfterRotationIsUnavailable: a token signed with a key the
// cache does not hold, while the provider's JWKS is down, is an outage
// (503), not an invalid token; once the JWKS answers again it verifies.
func TestJWKSOutageAfterRotationIsUnavailable(t *testing.T) {
	e := newEnvWith(t, envOptions{refetchCooldown: 300 * time.Millisecond})
	e.mustStatus(e.do("GET", "/v1/tasks", e.agent("agent-1"), nil), 200)
	e.agents.Rotate(t, "rsa-2")
	e.agents.SetDown(true)
	time.Sleep(400 * time.Millisecond) // past the cool-down: an unknown kid may refetch
	tok := e.agent("agent-1")
	r := e.do("GET", "/v1/tasks", tok, nil)
	if r.Status != 503 || r.str("code") != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("JWKS down after rotation: %d %s", r.Status, r.Raw)
	}
	e.agents.SetDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = e.do("GET", "/v1/tasks", tok, nil)
		if r.Status == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if r.Status != 200 {
		t.Fatalf("after the JWKS recovered: %d %s", r.Status, r.Raw)
	}
}
