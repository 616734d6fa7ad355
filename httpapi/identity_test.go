package httpapi

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/internal/testing/testoidc"
)

type identityAttack struct {
	id, name string
	token    func() string
	code     string
}

// identityAttacks are forged or unfit identity tokens, each tagged with
// its row of docs/security-matrix.md. Every one must be refused, change nothing,
// and be audited.
func identityAttacks(t *testing.T, e *env) []identityAttack {
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
	signed := func(header map[string]any, c map[string]any) func() string {
		return func() string { return e.agents.Sign(t, rsaKey, header, c) }
	}
	rawPayload := func(payload string) func() string {
		return func() string { return testoidc.SignRaw(t, rsaKey, nil, []byte(payload)) }
	}
	iss, sub := e.agents.URL, `"agent-1"`
	base := `"iss":"` + iss + `","aud":"` + audience + `","iat":` + itoa(int(now.Unix())) + `,"exp":` + itoa(int(now.Add(5*time.Minute).Unix()))
	return []identityAttack{
		{"J01", "alg none, empty signature", func() string {
			return testoidc.Forge(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), nil)
		}, "invalid_token"},
		{"J01", "alg None, non-empty signature", func() string {
			return testoidc.Forge(t, map[string]any{"alg": "None", "kid": "rsa-1"}, claims(nil), []byte("sig"))
		}, "invalid_token"},
		{"J01", "alg NONE", func() string { return testoidc.Forge(t, map[string]any{"alg": "NONE"}, claims(nil), nil) }, "invalid_token"},
		{"J02", "HS256 keyed with the issuer's RSA public key (PEM)", func() string {
			return testoidc.HS256(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(nil), pubPEM)
		}, "invalid_token"},
		{"J02", "HS256 keyed with the RSA public key (DER)", func() string {
			return testoidc.HS256(t, map[string]any{"alg": "HS256", "kid": "rsa-1"}, claims(nil), pubDER)
		}, "invalid_token"},
		{"J02", "ES256 header naming the RSA key", func() string {
			k := ecKey
			k.KID = "rsa-1"
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"J02", "PS256, outside the issuer's pin", func() string {
			k := rsaKey
			k.Alg = "PS256"
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"J03", "kid SQL injection", func() string {
			k := rsaKey
			k.KID = "' UNION SELECT 'k'--"
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"J03", "kid path traversal", func() string {
			k := rsaKey
			k.KID = "../../dev/null"
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"J03", "10 KB kid with NUL bytes", func() string {
			k := rsaKey
			k.KID = strings.Repeat("k\x00", 3<<10)
			return e.agents.Sign(t, k, nil, claims(nil))
		}, "invalid_token"},
		{"J06", "crit x-unknown", signed(map[string]any{"crit": []string{"x-unknown"}, "x-unknown": 1}, claims(nil)), "invalid_token"},
		{"J06", "crit exp", signed(map[string]any{"crit": []string{"exp"}}, claims(nil)), "invalid_token"},
		{"J06", "crit empty", signed(map[string]any{"crit": []string{}}, claims(nil)), "invalid_token"},
		{"J07", "expired", signed(nil, claims(map[string]any{"iat": now.Add(-time.Hour).Unix(), "exp": now.Add(-time.Second).Unix()})), "invalid_token"},
		{"J07", "no exp", signed(nil, claims(map[string]any{"exp": nil})), "invalid_token"},
		{"J07", "no iat", signed(nil, claims(map[string]any{"iat": nil})), "invalid_token"},
		{"J07", "nbf six minutes ahead", signed(nil, claims(map[string]any{"nbf": now.Add(6 * time.Minute).Unix(), "exp": now.Add(10 * time.Minute).Unix()})), "invalid_token"},
		{"J07", "iat ten minutes ahead", signed(nil, claims(map[string]any{"iat": now.Add(10 * time.Minute).Unix(), "exp": now.Add(15 * time.Minute).Unix()})), "invalid_token"},
		{"J07", "lifetime over the maximum", signed(nil, claims(map[string]any{"exp": now.Add(48 * time.Hour).Unix()})), "invalid_token"},
		{"J08", "wrong audience", func() string { return e.agents.Token(t, "agent-1", "some-other-client", nil) }, "invalid_token"},
		{"J08", "empty audience list", signed(nil, claims(map[string]any{"aud": []string{}})), "invalid_token"},
		{"J08", "empty audience string", signed(nil, claims(map[string]any{"aud": ""})), "invalid_token"},
		{"J08", "ours and another, no azp", signed(nil, claims(map[string]any{"aud": []string{audience, "other"}})), "invalid_token"},
		{"J08", "ours and another, foreign azp", signed(nil, claims(map[string]any{"aud": []string{audience, "other"}, "azp": "other"})), "invalid_token"},
		{"J09", "untrusted issuer", func() string { return e.untrusted.Token(t, "agent-1", audience, nil) }, "invalid_token"},
		{"J09", "iss of a trusted issuer signed by an untrusted key", func() string {
			return e.untrusted.Sign(t, e.untrusted.Keys()[0], nil, claims(nil))
		}, "invalid_token"},
		{"J09", "issuer with a trailing slash", signed(nil, claims(map[string]any{"iss": e.agents.URL + "/"})), "invalid_token"},
		{"J09", "issuer with a case variant", signed(nil, claims(map[string]any{"iss": strings.ToUpper(e.agents.URL)})), "invalid_token"},
		{"J11", "JWE-like five segments", func() string { return "a.b.c.d.e" }, "invalid_token"},
		{"J11", "bad base64", func() string { return "!!!.@@@.###" }, "invalid_token"},
		{"J11", "9 KB token", func() string { return "eyJ" + strings.Repeat("A", 9<<10) + ".e.e" }, "invalid_token"},
		{"J11", "non-UTF-8 payload", rawPayload("{" + base + `,"sub":"` + "\xff\xfe" + `"}`), "invalid_token"},
		{"J12", "duplicate sub", rawPayload("{" + base + `,"sub":` + sub + `,"sub":"admin"}`), "invalid_token"},
		{"J12", "aud and AUD", rawPayload("{" + base + `,"sub":` + sub + `,"AUD":"other"}`), "invalid_token"},
		{"J12", "sub and Sub", rawPayload("{" + base + `,"sub":` + sub + `,"Sub":"admin"}`), "invalid_token"},
		{"J13", "expired and badly signed", func() string {
			tok := e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iat": now.Add(-time.Hour).Unix(), "exp": now.Add(-time.Minute).Unix()}))
			return tok[:len(tok)-4] + "AAAA"
		}, "invalid_token"},
		{"J07", "missing sub", signed(nil, claims(map[string]any{"sub": nil})), "invalid_token"},
		{"O01", "an access-token typ from a trusted issuer", signed(map[string]any{"typ": "at+jwt"}, claims(nil)), "token_not_accepted"},
		{"O01", "iss is Errand itself", signed(nil, claims(map[string]any{"iss": publicURL})), "token_not_accepted"},
	}
}

// runIdentityAttacks presents every attack of the given rows to POST
// /v1/tasks and asserts refusal, no change and one audit event each.
func runIdentityAttacks(t *testing.T, ids ...string) {
	e := newEnv(t)
	ran := 0
	for _, c := range identityAttacks(t, e) {
		if !slices.Contains(ids, c.id) {
			continue
		}
		ran++
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
	if ran == 0 {
		t.Fatalf("no attack tagged %v", ids)
	}
}

func TestJ01AlgNone(t *testing.T)                       { runIdentityAttacks(t, "J01") }
func TestJ02AlgorithmConfusion(t *testing.T)            { runIdentityAttacks(t, "J02") }
func TestJ03KidInjection(t *testing.T)                  { runIdentityAttacks(t, "J03") }
func TestJ06Crit(t *testing.T)                          { runIdentityAttacks(t, "J06") }
func TestJ07TimeClaims(t *testing.T)                    { runIdentityAttacks(t, "J07") }
func TestJ08Audience(t *testing.T)                      { runIdentityAttacks(t, "J08") }
func TestJ09Issuer(t *testing.T)                        { runIdentityAttacks(t, "J09") }
func TestJ11OversizedAndMalformed(t *testing.T)         { runIdentityAttacks(t, "J11") }
func TestJ12DuplicateAndCaseVariantClaims(t *testing.T) { runIdentityAttacks(t, "J12") }
func TestJ13ErrorCombination(t *testing.T)              { runIdentityAttacks(t, "J13") }
func TestO01AccessTokenAsIdentity(t *testing.T)         { runIdentityAttacks(t, "O01") }

func TestMissingAuthorization(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", "", map[string]any{}), 401, "invalid_token")
}

// TestJ07BoundaryStillAccepted: a token one second from expiry, with nbf
// now, is accepted — the time checks are not off by one.
func TestJ07BoundaryStillAccepted(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	c := e.agents.Claims("agent-1", audience)
	c["exp"], c["nbf"] = now.Add(2*time.Second).Unix(), now.Unix()
	e.mustStatus(e.do("GET", "/v1/tasks", e.agents.Sign(t, e.agents.Keys()[0], nil, c), nil), 200)
	c["aud"], c["azp"] = []string{audience, "other"}, audience
	e.mustStatus(e.do("GET", "/v1/tasks", e.agents.Sign(t, e.agents.Keys()[0], nil, c), nil), 200)
}

// TestJ05HeaderKeysAreNeverFetched: jku, x5u, an embedded jwk or a
// self-signed x5c never make Errand trust a key or fetch anything.
func TestJ05HeaderKeysAreNeverFetched(t *testing.T) {
	e := newEnv(t)
	var hits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer attacker.Close()
	evil, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	evilKey := testoidc.Key{KID: "rsa-1", Alg: "RS256", Priv: evil}
	jwk := map[string]any{"kty": "RSA", "kid": "rsa-1", "n": b64(evil.N.Bytes()), "e": "AQAB"}
	for name, h := range map[string]map[string]any{
		"jku":          {"jku": attacker.URL + "/jwks"},
		"x5u":          {"x5u": attacker.URL + "/cert"},
		"embedded jwk": {"jwk": jwk},
		"x5c":          {"x5c": []string{b64([]byte("self-signed"))}},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			tok := e.agents.Sign(t, evilKey, h, e.agents.Claims("agent-1", audience))
			e.refused(before, e.do("GET", "/v1/tasks", tok, nil), 401, "invalid_token")
		})
	}
	if hits.Load() != 0 {
		t.Fatalf("the attacker's server was fetched %d times", hits.Load())
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestJ10KindsAreDisjoint: a user-issuer token whose sub equals an agent's
// is a different principal and cannot act as that agent (J10).
func TestJ10KindsAreDisjoint(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-7", "alice", "github.repo.read:acme/**")
	before := e.snapshot()
	r := e.do("POST", "/v1/tasks/"+id+"/tokens", e.users.Token(t, "agent-7", audience, nil),
		map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub})
	e.refused(before, r, 403, "wrong_principal_kind")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/close", e.resources.Token(t, "agent-7", audience, nil), nil), 403, "wrong_principal_kind")
}

// TestJ04UnknownKidFloodIsRateLimited: random kids never make Errand hammer
// the identity provider's JWKS (J04), and valid tokens keep verifying.
func TestJ04UnknownKidFloodIsRateLimited(t *testing.T) {
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

// TestF01IdentityProviderDownIsUnavailableNotUnauthorized: an unreachable
// issuer is an outage (503), never a 401.
func TestF01IdentityProviderDownIsUnavailableNotUnauthorized(t *testing.T) {
	e := newEnv(t)
	e.agents.SetDown(true)
	r := e.do("GET", "/v1/tasks", e.agent("agent-1"), nil)
	if r.Status != 503 || r.str("code") != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("IdP down: %d %s", r.Status, r.Raw)
	}
}

// TestJ10SameSubAtAnotherTrustedUserIssuerCannotApprove: with two trusted
// user issuers, "alice" at one is not "alice" at the other (J10).
func TestJ10SameSubAtAnotherTrustedUserIssuerCannotApprove(t *testing.T) {
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

// TestF01JWKSOutageAfterRotationIsUnavailable: a token signed with a key the
// cache does not hold, while the provider's JWKS is down, is an outage
// (503), not an invalid token; once the JWKS answers again it verifies.
func TestF01JWKSOutageAfterRotationIsUnavailable(t *testing.T) {
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

// TestJ08SubjectAllowList: an issuer that signs for every workload on its
// platform (GitHub Actions, a shared cluster) vouches only for the
// subjects the config allows.
func TestJ08SubjectAllowList(t *testing.T) {
	e := newEnvWith(t, envOptions{agentSubjects: []string{"repo:acme/*:ref:refs/heads/main"}})
	e.mustStatus(e.do("GET", "/v1/tasks", e.agent("repo:acme/api:ref:refs/heads/main"), nil), 200)
	for _, sub := range []string{"repo:evil/api:ref:refs/heads/main", "repo:acme/api:ref:refs/heads/feature", "repo:acme/api/x:ref:refs/heads/main"} {
		before := e.snapshot()
		e.refused(before, e.do("GET", "/v1/tasks", e.agent(sub), nil), 401, "invalid_token")
	}
}
