package resource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/errandtest"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/issuer/jwt"
)

// payload decodes the claims of a compact JWT.
func payload(t testing.TB, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jwksOf(t testing.TB, e *errandtest.Errand) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(e.Tokens.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	return set
}

// TestS01AlgConfusion forges tokens whose claims are a real token's and
// whose header or signature is not: HS256 keyed with the public key (its
// raw bytes and its JWK), alg none, the key's kid with another algorithm,
// another typ. The middleware refuses each, as Errand's own verifier does.
func TestS01AlgConfusion(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	v := newVerifier(t, e, nil)
	ready(t, v)
	task := approvedTask(t, e, "github.repo.read:acme/**")
	real := mint(t, e, task, 300, nil, "github.repo.read:acme/api")
	claims := payload(t, real)
	key := jwksOf(t, e).Keys[0]
	pubJWK, _ := key.MarshalJSON()
	x := func() []byte { // the public key's raw bytes (OKP x, or EC x||y)
		var m map[string]string
		_ = json.Unmarshal(pubJWK, &m)
		b, _ := base64.RawURLEncoding.DecodeString(m["x"])
		return b
	}()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other := testoidc.Key{KID: key.KeyID, Alg: "ES256", Priv: ec}
	hdr := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "at+jwt", "kid": key.KeyID} }
	idjag, err := e.Tokens.SignIDJAG(context.Background(), broker.IDJAG{
		Subject: "alice", Audience: errandtest.API, ClientID: "bot", JTI: "j1", TaskID: task,
		IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	forged := map[string]string{
		"HS256 keyed with the public key's bytes": testoidc.HS256(t, hdr("HS256"), claims, x),
		"HS256 keyed with the public JWK":         testoidc.HS256(t, hdr("HS256"), claims, pubJWK),
		"alg none, no signature":                  testoidc.Forge(t, hdr("none"), claims, nil),
		"alg None":                                testoidc.Forge(t, hdr("None"), claims, nil),
		"the key's kid under ES256":               testoidc.SignRaw(t, other, hdr("ES256"), mustJSON(claims)),
		"typ JWT":                                 retype(t, real, "JWT"),
		"no typ":                                  retype(t, real, ""),
		"Errand's own ID-JAG":                     idjag,
		"signature of another token":              real[:strings.LastIndexByte(real, '.')] + idjag[strings.LastIndexByte(idjag, '.'):],
	}
	h := v.Middleware(ok)
	for name, tok := range forged {
		rec := serve(h, "GET", "/", "Bearer "+tok)
		if rec.Code != 401 || !strings.Contains(challenge(rec), `error="invalid_token"`) {
			t.Errorf("%s: %d %q, want 401 invalid_token", name, rec.Code, challenge(rec))
		}
		if _, err := e.Tokens.Verify(context.Background(), tok); err == nil {
			t.Errorf("%s: Errand's own verifier accepts it: the SDK must agree", name)
		}
	}
	if rec := serve(h, "GET", "/", "Bearer "+real); rec.Code != 200 {
		t.Fatalf("the real token: %d %s", rec.Code, rec.Body)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// retype rewrites a token's typ header, keeping its signature (which then
// no longer matches: the header is refused before the key is looked up).
func retype(t testing.TB, raw, typ string) string {
	parts := strings.Split(raw, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	_ = json.Unmarshal(b, &h)
	if typ == "" {
		delete(h, "typ")
	} else {
		h["typ"] = typ
	}
	return base64.RawURLEncoding.EncodeToString(mustJSON(h)) + "." + parts[1] + "." + parts[2]
}

// countingFront is a reverse proxy in front of Errand that counts the
// JWKS requests it passes.
func countingFront(t testing.TB, e *errandtest.Errand) (*httptest.Server, *atomic.Int64) {
	u, _ := url.Parse(e.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/jwks.json" {
			n.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestS01JWKSRefetchStorm sends a thousand tokens naming unknown kids at
// once: Errand's JWKS is fetched at most once per cool-down. A real key
// rotation is still picked up once the cool-down has passed.
func TestS01JWKSRefetchStorm(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	front, hits := countingFront(t, e)
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	v := newVerifier(t, e, func(c *Config) { c.Now, c.RefetchCooldown = now, 30*time.Second }, front.URL)
	ready(t, v)
	task := approvedTask(t, e, "github.repo.read:acme/**")
	claims := payload(t, mint(t, e, task, 300, nil, "github.repo.read:acme/api"))
	if _, fetched := within(5*time.Second, func() bool { return hits.Load() >= 1 }); !fetched {
		t.Fatal("the verifier never fetched the JWKS")
	}
	base := hits.Load()
	h := v.Middleware(ok)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var kid [8]byte
			_, _ = rand.Read(kid[:])
			k := testoidc.Key{KID: hex.EncodeToString(kid[:]) + string(rune('a'+i%26)), Alg: "ES256", Priv: ec}
			tok := testoidc.SignRaw(t, k, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": k.KID}, mustJSON(claims))
			if serve(h, "GET", "/", "Bearer "+tok).Code == 200 {
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != 0 {
		t.Fatalf("%d tokens of unknown keys accepted", accepted.Load())
	}
	if got := hits.Load() - base; got > 1 {
		t.Fatalf("1000 unknown kids fetched the JWKS %d times; at most once per cool-down", got)
	}
	// Rotation: Errand signs with a key the verifier has not seen (two
	// rotations: the first one's key was published as the next key from
	// the start, as serve publishes it); past the cool-down, its first
	// token refetches the JWKS and is accepted.
	for range 2 {
		if _, err := e.Tokens.Rotate(context.Background(), jwt.KeyPolicy{Overlap: time.Hour}, broker.SystemActor, true); err != nil {
			t.Fatal(err)
		}
	}
	rotated := mint(t, e, task, 300, nil, "github.repo.read:acme/api")
	skew.Store(int64(31 * time.Second))
	before := hits.Load()
	if rec := serve(h, "GET", "/", "Bearer "+rotated); rec.Code != 200 {
		t.Fatalf("a token of the rotated key: %d %s", rec.Code, rec.Body)
	}
	if hits.Load() == before {
		t.Fatal("the rotated key was accepted without a JWKS refetch: the verifier knew it already")
	}
}

// TestS01ExpiryLeeway: a token expired by less than the leeway is
// accepted, by more refused; a leeway beyond MaxLeeway is refused at
// configuration; and a revoked token is refused within the leeway too.
func TestS01ExpiryLeeway(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	task := approvedTask(t, e, "github.repo.read:acme/**")
	const ttl = 60
	tok := mint(t, e, task, ttl, nil, "github.repo.read:acme/api")
	exp := time.Unix(int64(payload(t, tok)["exp"].(float64)), 0)
	at := func(past time.Duration) *Verifier {
		off := time.Until(exp) + past
		v := newVerifier(t, e, func(c *Config) {
			c.Now = func() time.Time { return time.Now().Add(off) }
		})
		ready(t, v)
		return v
	}
	inLeeway := at(2 * time.Second) // expired 2 s ago, leeway 5 s
	beyond := at(7 * time.Second)   // expired 7 s ago
	if rec := serve(inLeeway.Middleware(ok), "GET", "/", "Bearer "+tok); rec.Code != 200 {
		t.Fatalf("expired within the leeway: %d %s", rec.Code, rec.Body)
	}
	rec := serve(beyond.Middleware(ok), "GET", "/", "Bearer "+tok)
	if rec.Code != 401 || !strings.Contains(challenge(rec), "expired") {
		t.Fatalf("expired beyond the leeway: %d %q", rec.Code, challenge(rec))
	}
	for _, l := range []time.Duration{-time.Second, MaxLeeway + time.Second, 10 * time.Minute} {
		if _, err := New(Config{Issuer: e.URL, Audience: errandtest.API, Credential: idToken(func() string { return "" }), Leeway: l}); err == nil {
			t.Errorf("a leeway of %s was accepted", l)
		}
	}
	// A token remembered as verified is refused once past the leeway too.
	var skew atomic.Int64
	clock := newVerifier(t, e, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		c.StreamIdle = 10 * time.Minute // the clock jump must not stale the feed
	})
	ready(t, clock)
	if rec := serve(clock.Middleware(ok), "GET", "/", "Bearer "+tok); rec.Code != 200 {
		t.Fatalf("before expiry: %d", rec.Code)
	}
	skew.Store(int64(time.Until(exp) + 7*time.Second))
	if rec := serve(clock.Middleware(ok), "GET", "/", "Bearer "+tok); rec.Code != 401 || !strings.Contains(challenge(rec), "expired") {
		t.Fatalf("a remembered token past the leeway: %d %q", rec.Code, challenge(rec))
	}
	// Revoked, then presented within the leeway after its expiry.
	closeTask(t, e, task)
	if _, refused := within(3*time.Second, func() bool { return serve(inLeeway.Middleware(ok), "GET", "/", "Bearer "+tok).Code == 401 }); !refused {
		t.Fatal("a revoked token within the leeway was accepted")
	}
}

// TestS01ScopeVectors holds Require to the containment vectors Errand's
// own ParseScope and CoveredBy pass (broker/testdata/scope_vectors.json):
// a token granted `granted` reaches a route requiring `requested` exactly
// when the vectors say covered. Invalid scopes are refused as a route's
// scope (Require panics) and as a token's (invalid_token).
func TestS01ScopeVectors(t *testing.T) {
	b, err := os.ReadFile("../broker/testdata/scope_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vec struct {
		Covered []struct {
			Name, Requested, Granted string
			Covered                  bool
		}
		Invalid []string
	}
	if err := json.Unmarshal(b, &vec); err != nil {
		t.Fatal(err)
	}
	if len(vec.Covered) < 20 || len(vec.Invalid) < 10 {
		t.Fatalf("the vector file lost cases: %d, %d", len(vec.Covered), len(vec.Invalid))
	}
	iss := newLocalIssuer(t)
	for _, c := range vec.Covered {
		action, res, _ := strings.Cut(c.Requested, ":")
		h := iss.v.Require(action, res)(ok)
		rec := serve(h, "GET", "/", "Bearer "+iss.sign(t, c.Granted))
		got := rec.Code == 200
		if got != c.Covered || (!got && rec.Code != http.StatusForbidden) {
			t.Errorf("%s: %s against a token of %s: %d, the vectors say covered=%v", c.Name, c.Requested, c.Granted, rec.Code, c.Covered)
		}
		tok := &Token{}
		tok.scopes, _ = broker.ParseScopes([]string{c.Granted})
		if tok.Allows(action, res) != c.Covered {
			t.Errorf("%s: Token.Allows disagrees with the vectors", c.Name)
		}
	}
	for _, s := range vec.Invalid {
		action, res, _ := strings.Cut(s, ":")
		func() {
			defer func() { _ = recover() }()
			iss.v.Require(action, res)
			if s != "" && res != "" {
				t.Errorf("Require accepted the invalid scope %q", s)
			}
		}()
		if strings.ContainsAny(s, " \t") || s == "" {
			continue // not one scope of a space-separated claim
		}
		rec := serve(iss.v.Middleware(ok), "GET", "/", "Bearer "+iss.sign(t, s))
		if rec.Code != 401 {
			t.Errorf("a token carrying the invalid scope %q: %d", s, rec.Code)
		}
	}
}

// localIssuer signs tokens with Errand's own signer (its current key,
// published in its JWKS) for any scope: the containment vectors' actions
// are in no catalog, so no task could be approved for them.
type localIssuer struct {
	e *errandtest.Errand
	v *Verifier
}

func newLocalIssuer(t testing.TB) *localIssuer {
	t.Helper()
	e := errandtest.Start(t, errandtest.Options{})
	v := newVerifier(t, e, nil)
	ready(t, v)
	return &localIssuer{e: e, v: v}
}

func (li *localIssuer) sign(t testing.TB, scope string) string {
	t.Helper()
	now := time.Now()
	var jti [8]byte
	_, _ = rand.Read(jti[:])
	tok, err := li.e.Tokens.Sign(context.Background(), broker.AccessToken{
		Subject: "alice", ClientID: "bot", Audience: errandtest.API, Scope: scope, TaskID: "t1",
		JTI: hex.EncodeToString(jti[:]), IssuedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
