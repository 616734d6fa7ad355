package jwt

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// memKeys is a small hand-written KeyStore for unit tests; the PostgreSQL
// implementation is covered by the store conformance suite.
type memKeys struct {
	mu     sync.Mutex
	keys   []broker.SigningKey
	now    func() time.Time
	events []broker.AuditEvent // committed with the key changes
}

func (m *memKeys) SigningKeys(context.Context) ([]broker.SigningKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]broker.SigningKey(nil), m.keys...), nil
}

func (m *memKeys) InsertCurrentKey(_ context.Context, k broker.SigningKey) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.keys {
		if x.State == "current" {
			return false, nil
		}
	}
	k.State, k.ActivatedAt = "current", k.CreatedAt
	m.keys = append(m.keys, k)
	return true, nil
}

// ChangeKeys applies a plan at m.now (time.Now when unset).
func (m *memKeys) ChangeKeys(_ context.Context, plan func([]broker.SigningKey, time.Time) (broker.KeyChange, error)) (broker.KeyChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now().UTC()
	if m.now != nil {
		now = m.now()
	}
	c, err := plan(append([]broker.SigningKey(nil), m.keys...), now)
	if err != nil {
		return broker.KeyChange{}, err
	}
	for j := range m.keys {
		st, ok := c.States[m.keys[j].KID]
		if !ok {
			continue
		}
		m.keys[j].State = st
		switch st {
		case broker.KeyCurrent:
			m.keys[j].ActivatedAt = now
		case broker.KeyPrevious:
			m.keys[j].DeactivatedAt = now
		case broker.KeyRetired:
			m.keys[j].RetiredAt = now
		}
	}
	for _, k := range c.Insert {
		if k.State == broker.KeyCurrent {
			k.ActivatedAt = now
		}
		m.keys = append([]broker.SigningKey{k}, m.keys...)
	}
	m.events = append(m.events, c.Events...)
	return c, nil
}

const iss = "https://errand.test"

var secret = []byte("0123456789abcdef0123456789abcdef")

func newIssuer(t *testing.T, ks *memKeys, alg string, now func() time.Time) *Issuer {
	t.Helper()
	i, err := New(context.Background(), Config{Issuer: iss, Keys: ks, Secret: secret, Alg: alg, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func sample(now time.Time) broker.AccessToken {
	now = now.UTC()
	return broker.AccessToken{
		Subject: "alice", Act: broker.Ref{Issuer: "https://agents", Subject: "bot"}, ClientID: "bot",
		Audience: "https://api", Scope: "a.read:**", TaskID: "tsk_1", JTI: "jti-1",
		IssuedAt: now, NotBefore: now, ExpiresAt: now.Add(time.Minute),
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			now := time.Now().Truncate(time.Second)
			i := newIssuer(t, &memKeys{}, alg, func() time.Time { return now })
			tok, err := i.Sign(context.Background(), sample(now))
			if err != nil {
				t.Fatal(err)
			}
			got, err := i.Verify(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if got != sample(now) {
				t.Fatalf("round trip: %+v", got)
			}
			// The header, encoded once per key, is exactly this.
			hb, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
			if err != nil {
				t.Fatal(err)
			}
			var head map[string]any
			if err := json.Unmarshal(hb, &head); err != nil || len(head) != 3 || head["alg"] != alg ||
				head["typ"] != "at+jwt" || head["kid"] != i.current.kid {
				t.Fatalf("header %s", hb)
			}
			var jwks struct{ Keys []map[string]any }
			if err := json.Unmarshal(i.JWKS(), &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0]["alg"] != alg {
				t.Fatalf("jwks: %s", i.JWKS())
			}
			for _, private := range []string{"d", "p", "q"} {
				if _, ok := jwks.Keys[0][private]; ok {
					t.Fatalf("JWKS leaks private member %q", private)
				}
			}
		})
	}
}

func TestReplicasShareTheStoredKey(t *testing.T) {
	ks := &memKeys{}
	a := newIssuer(t, ks, AlgEdDSA, time.Now)
	b := newIssuer(t, ks, AlgEdDSA, time.Now)
	tok, err := a.Sign(context.Background(), sample(time.Now().Truncate(time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(context.Background(), tok); err != nil {
		t.Fatalf("replica b cannot verify replica a's token: %v", err)
	}
	if strings.Contains(string(ks.keys[0].Private), "PRIVATE") || len(ks.keys) != 1 {
		t.Fatal("key stored in the clear or twice")
	}
	if _, err := New(context.Background(), Config{Issuer: iss, Keys: ks, Secret: []byte("another-secret-another-secret-xx")}); err == nil {
		t.Fatal("a wrong system_secret unsealed the key")
	}
}

func part(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestVerifyRefusesForgedBrokerTokens: J01, J02, J03, J06, J07 on Errand's
// own tokens.
func TestVerifyRefusesForgedBrokerTokens(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	i := newIssuer(t, &memKeys{}, AlgEdDSA, clock)
	good, err := i.Sign(context.Background(), sample(now))
	if err != nil {
		t.Fatal(err)
	}
	seg := strings.Split(good, ".")
	var hdr map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(seg[0])
	_ = json.Unmarshal(b, &hdr)
	kid := hdr["kid"].(string)
	withHeader := func(h map[string]any) string { return part(h) + "." + seg[1] + "." + seg[2] }
	signed := func(at broker.AccessToken) string {
		tok, err := i.Sign(context.Background(), at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hs := func() string {
		in := part(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid}) + "." + seg[1]
		m := hmac.New(sha256.New, i.current.jwk)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	expired := sample(now.Add(-time.Hour))
	future := sample(now.Add(10 * time.Minute))
	cases := map[string]string{
		"alg none":                     part(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + seg[1] + ".",
		"alg none with signature":      withHeader(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}),
		"HS256 keyed with the JWK":     hs(),
		"wrong typ":                    withHeader(map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": kid}),
		"no typ":                       withHeader(map[string]any{"alg": "EdDSA", "kid": kid}),
		"crit":                         withHeader(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "crit": []string{"exp"}}),
		"empty crit":                   withHeader(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "crit": []string{}}),
		"kid injection":                withHeader(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "../../dev/null' UNION SELECT 'k'--"}),
		"10 KB kid":                    withHeader(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": strings.Repeat("k", 10<<10)}),
		"ES256 header on an EdDSA key": withHeader(map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": kid}),
		"tampered payload":             seg[0] + "." + part(map[string]any{"sub": "admin"}) + "." + seg[2],
		"expired":                      signed(expired),
		"issued in the future":         signed(future),
		"four segments":                good + ".x",
		"empty":                        "",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := i.Verify(context.Background(), tok); broker.CodeOf(err) != "invalid_token" {
				t.Fatalf("Verify = %v, want invalid_token", err)
			}
		})
	}
	other := newIssuer(t, &memKeys{}, AlgEdDSA, clock)
	foreign, _ := other.Sign(context.Background(), sample(now))
	if _, err := i.Verify(context.Background(), foreign); broker.CodeOf(err) != "invalid_token" {
		t.Fatalf("token of another Errand deployment verified: %v", err)
	}
}

// A verified token is remembered: the same token verifies again without a
// signature check, a changed one is checked (and refused), and a
// remembered one is refused once expired.
func TestVerifiedTokenCache(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	clock := func() time.Time { return now }
	i := newIssuer(t, &memKeys{}, "", clock)
	raw, err := i.Sign(context.Background(), sample(now))
	if err != nil {
		t.Fatal(err)
	}
	first, err := i.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := i.Verify(context.Background(), raw); err != nil || again != first || len(i.verified) != 1 {
		t.Fatalf("second verification: %v %v (%d cached)", again, err, len(i.verified))
	}
	parts := strings.Split(raw, ".")
	sig := []byte(parts[2])
	sig[3] ^= 1
	if _, err := i.Verify(context.Background(), parts[0]+"."+parts[1]+"."+string(sig)); err == nil {
		t.Fatal("a changed signature verified")
	}
	now = first.ExpiresAt.Add(Leeway + time.Second)
	if _, err := i.Verify(context.Background(), raw); err == nil {
		t.Fatal("a remembered token verified after it expired")
	}
}
