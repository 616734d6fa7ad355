package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testoidc"
)

// The identity attacks, each tagged with its row of the security test
// catalogue, presented to the verifier itself: against a real OIDC issuer
// served in process, each forged or unfit token must be refused with its
// code and yield no principal. (httpapi checks once, end to end, that such
// a refusal is a 401 problem.)

const (
	attackAudience = "errand"
	attackSelf     = "https://errand.test"
)

type attackEnv struct {
	v                 *Verifier
	agents, untrusted *testoidc.Issuer
}

// newAttackEnv is a verifier trusting one agent issuer (agents); untrusted,
// started only when a test needs it, is an issuer it does not trust.
func newAttackEnv(t *testing.T, mod func(*Issuer, *Config)) *attackEnv {
	t.Helper()
	e := &attackEnv{agents: testoidc.New(t)}
	is := Issuer{URL: e.agents.URL, Audience: attackAudience, Kind: broker.KindAgent}
	cfg := Config{Self: attackSelf}
	if mod != nil {
		mod(&is, &cfg)
	}
	cfg.Issuers = []Issuer{is}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.v = v
	return e
}

// wantAccepted verifies tok and checks the principal.
func (e *attackEnv) wantAccepted(t *testing.T, tok, sub string) {
	t.Helper()
	p, err := e.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("a valid token was refused: %v", err)
	}
	if p.Issuer != e.agents.URL || p.Subject != sub || p.Kind != broker.KindAgent || len(p.Groups) != 0 || p.Auditor || p.Admin {
		t.Fatalf("principal %+v", p)
	}
}

// wantRefused verifies tok and checks that it is refused with code and
// gives no principal.
func (e *attackEnv) wantRefused(t *testing.T, tok, code string) {
	t.Helper()
	p, err := e.v.Verify(context.Background(), tok)
	if err == nil {
		t.Fatalf("accepted as %+v; want %s", p, code)
	}
	if got := broker.CodeOf(err); got != code {
		t.Fatalf("refused with %q (%v); want %s", got, err, code)
	}
	if p.Subject != "" || p.Issuer != "" || p.Kind != "" {
		t.Fatalf("a refusal still named a principal: %+v", p)
	}
}

type identityAttack struct {
	id, name string
	token    func() string
	code     string
}

// identityAttacks are forged or unfit identity tokens, each tagged with
// its row of the catalogue.
func identityAttacks(t *testing.T, e *attackEnv) []identityAttack {
	now := time.Now()
	claims := func(extra map[string]any) map[string]any {
		c := e.agents.Claims("agent-1", attackAudience)
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
	base := `"iss":"` + iss + `","aud":"` + attackAudience + `","iat":` + strconv.FormatInt(now.Unix(), 10) +
		`,"exp":` + strconv.FormatInt(now.Add(5*time.Minute).Unix(), 10)
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
		{"J07", "missing sub", signed(nil, claims(map[string]any{"sub": nil})), "invalid_token"},
		{"J08", "wrong audience", func() string { return e.agents.Token(t, "agent-1", "some-other-client", nil) }, "invalid_token"},
		{"J08", "empty audience list", signed(nil, claims(map[string]any{"aud": []string{}})), "invalid_token"},
		{"J08", "empty audience string", signed(nil, claims(map[string]any{"aud": ""})), "invalid_token"},
		{"J08", "ours and another, no azp", signed(nil, claims(map[string]any{"aud": []string{attackAudience, "other"}})), "invalid_token"},
		{"J08", "ours and another, foreign azp", signed(nil, claims(map[string]any{"aud": []string{attackAudience, "other"}, "azp": "other"})), "invalid_token"},
		{"J09", "untrusted issuer", func() string { return e.untrusted.Token(t, "agent-1", attackAudience, nil) }, "invalid_token"},
		{"J09", "iss of a trusted issuer signed by an untrusted key", func() string {
			return e.untrusted.Sign(t, e.untrusted.Keys()[0], nil, claims(nil))
		}, "invalid_token"},
		{"J09", "issuer with a trailing slash", signed(nil, claims(map[string]any{"iss": e.agents.URL + "/"})), "invalid_token"},
		{"J09", "issuer with a case variant", signed(nil, claims(map[string]any{"iss": strings.ToUpper(e.agents.URL)})), "invalid_token"},
		{"J11", "JWE-like five segments", func() string { return "a.b.c.d.e" }, "invalid_token"},
		{"J11", "bad base64", func() string { return "!!!.@@@.###" }, "invalid_token"},
		{"J11", "9 KB token", func() string { return "eyJ" + strings.Repeat("A", 9<<10) + ".e.e" }, "invalid_token"},
		{"J11", "non-UTF-8 payload", rawPayload("{" + base + `,"sub":"` + "\xff\xfe" + `"}`), "invalid_token"},
		{"J11", "empty token", func() string { return "" }, "invalid_token"},
		{"J12", "duplicate sub", rawPayload("{" + base + `,"sub":` + sub + `,"sub":"admin"}`), "invalid_token"},
		{"J12", "aud and AUD", rawPayload("{" + base + `,"sub":` + sub + `,"AUD":"other"}`), "invalid_token"},
		{"J12", "sub and Sub", rawPayload("{" + base + `,"sub":` + sub + `,"Sub":"admin"}`), "invalid_token"},
		{"J13", "expired and badly signed", func() string {
			tok := e.agents.Sign(t, rsaKey, nil, claims(map[string]any{"iat": now.Add(-time.Hour).Unix(), "exp": now.Add(-time.Minute).Unix()}))
			return tok[:len(tok)-4] + "AAAA"
		}, "invalid_token"},
		{"O01", "an access-token typ from a trusted issuer", signed(map[string]any{"typ": "at+jwt"}, claims(nil)), "token_not_accepted"},
		{"O01", "iss is Errand itself", signed(nil, claims(map[string]any{"iss": attackSelf})), "token_not_accepted"},
	}
}

// runIdentityAttacks presents every attack of the given rows to the
// verifier, after checking that it accepts the untampered token.
func runIdentityAttacks(t *testing.T, ids ...string) {
	t.Parallel()
	e := newAttackEnv(t, nil)
	if slices.Contains(ids, "J09") {
		e.untrusted = testoidc.New(t)
	}
	e.wantAccepted(t, e.agents.Token(t, "agent-1", attackAudience, nil), "agent-1")
	ran := 0
	for _, c := range identityAttacks(t, e) {
		if !slices.Contains(ids, c.id) {
			continue
		}
		ran++
		t.Run(c.name, func(t *testing.T) { e.wantRefused(t, c.token(), c.code) })
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

// TestJ07BoundaryStillAccepted: a token one second from expiry, with nbf
// now, is accepted — the time checks are not off by one; so is a token for
// several audiences whose azp is Errand's.
func TestJ07BoundaryStillAccepted(t *testing.T) {
	t.Parallel()
	e := newAttackEnv(t, func(_ *Issuer, c *Config) { c.CacheSize = -1 })
	now := time.Now()
	c := e.agents.Claims("agent-1", attackAudience)
	c["exp"], c["nbf"] = now.Add(2*time.Second).Unix(), now.Unix()
	e.wantAccepted(t, e.agents.Sign(t, e.agents.Keys()[0], nil, c), "agent-1")
	c["aud"], c["azp"] = []string{attackAudience, "other"}, attackAudience
	e.wantAccepted(t, e.agents.Sign(t, e.agents.Keys()[0], nil, c), "agent-1")
}

// TestJ05HeaderKeysAreNeverFetched: jku, x5u, an embedded jwk or a
// self-signed x5c never make the verifier trust a key or fetch anything.
func TestJ05HeaderKeysAreNeverFetched(t *testing.T) {
	t.Parallel()
	e := newAttackEnv(t, nil)
	var hits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer attacker.Close()
	evil, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	evilKey := testoidc.Key{KID: "rsa-1", Alg: "RS256", Priv: evil}
	b64 := base64.RawURLEncoding.EncodeToString
	jwk := map[string]any{"kty": "RSA", "kid": "rsa-1", "n": b64(evil.N.Bytes()), "e": "AQAB"}
	for name, h := range map[string]map[string]any{
		"jku":          {"jku": attacker.URL + "/jwks"},
		"x5u":          {"x5u": attacker.URL + "/cert"},
		"embedded jwk": {"jwk": jwk},
		"x5c":          {"x5c": []string{b64([]byte("self-signed"))}},
	} {
		t.Run(name, func(t *testing.T) {
			e.wantRefused(t, e.agents.Sign(t, evilKey, h, e.agents.Claims("agent-1", attackAudience)), "invalid_token")
		})
	}
	if hits.Load() != 0 {
		t.Fatalf("the attacker's server was fetched %d times", hits.Load())
	}
}

// TestJ04UnknownKidFloodIsRateLimited: random kids never make the verifier
// hammer the identity provider's JWKS, and valid tokens keep verifying.
func TestJ04UnknownKidFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	e := newAttackEnv(t, func(_ *Issuer, c *Config) { c.CacheSize = -1 })
	e.wantAccepted(t, e.agents.Token(t, "agent-1", attackAudience, nil), "agent-1") // discovery + first fetch
	hits := e.agents.JWKSHits()
	k := e.agents.Keys()[0]
	for i := 0; i < 50; i++ {
		k.KID = "random-" + string(rune('a'+i%26)) + strings.Repeat("x", i)
		e.wantRefused(t, e.agents.Sign(t, k, nil, e.agents.Claims("agent-1", attackAudience)), "invalid_token")
	}
	if got := e.agents.JWKSHits() - hits; got > 1 {
		t.Fatalf("%d JWKS fetches for 50 unknown kids, want at most 1 per cool-down", got)
	}
	e.wantAccepted(t, e.agents.Token(t, "agent-2", attackAudience, nil), "agent-2")
}

// TestJ08SubjectAllowList: an issuer that signs for every workload on its
// platform (GitHub Actions, a shared cluster) vouches only for the
// subjects the config allows.
func TestJ08SubjectAllowList(t *testing.T) {
	t.Parallel()
	e := newAttackEnv(t, func(is *Issuer, _ *Config) { is.Subjects = []string{"repo:acme/*:ref:refs/heads/main"} })
	allowed := "repo:acme/api:ref:refs/heads/main"
	e.wantAccepted(t, e.agents.Token(t, allowed, attackAudience, nil), allowed)
	for _, sub := range []string{"repo:evil/api:ref:refs/heads/main", "repo:acme/api:ref:refs/heads/feature", "repo:acme/api/x:ref:refs/heads/main"} {
		t.Run(sub, func(t *testing.T) { e.wantRefused(t, e.agents.Token(t, sub, attackAudience, nil), "invalid_token") })
	}
}

// TestF01OutageIsUnavailableNotInvalid: an issuer that cannot be reached,
// at discovery or for the JWKS of a rotated key, is an outage
// (ErrUnavailable), never an invalid token; once it answers again the
// token verifies. The verifier's clock is moved, not waited for.
func TestF01OutageIsUnavailableNotInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAttackEnv(t, nil)
	e.agents.SetDown(true)
	if _, err := e.v.Verify(ctx, e.agents.Token(t, "agent-1", attackAudience, nil)); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("discovery down: %v; want unavailable", err)
	}

	var (
		mu  sync.Mutex
		now = time.Now()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	e = newAttackEnv(t, func(_ *Issuer, c *Config) { c.RefetchCooldown, c.Now, c.CacheSize = 30*time.Second, clock, -1 })
	e.wantAccepted(t, e.agents.Token(t, "agent-1", attackAudience, nil), "agent-1")
	e.agents.Rotate(t, "rsa-2")
	e.agents.SetDown(true)
	tok := e.agents.Token(t, "agent-1", attackAudience, nil)
	advance(31 * time.Second) // past the cool-down: an unknown kid may refetch
	if _, err := e.v.Verify(ctx, tok); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("JWKS down after rotation: %v; want unavailable", err)
	}
	e.agents.SetDown(false)
	advance(31 * time.Second) // past the retry after a failed fetch
	e.wantAccepted(t, tok, "agent-1")
}
