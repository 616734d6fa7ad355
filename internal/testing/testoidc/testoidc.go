// Package testoidc runs a real OpenID Connect issuer over HTTP for tests:
// discovery, a JWKS endpoint and ID tokens signed with RS256 or ES256 keys,
// with helpers to forge the malformed tokens an attacker would send.
package testoidc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is a signing key of the issuer.
type Key struct {
	KID  string
	Alg  string
	Priv crypto.Signer
}

// Issuer is a running test OIDC provider.
type Issuer struct {
	URL string

	srv      *httptest.Server
	mu       sync.Mutex
	keys     []Key
	jwksHits atomic.Int64
	down     atomic.Bool
}

// New starts an issuer with one RS256 and one ES256 key; it stops at cleanup.
func New(t testing.TB) *Issuer {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	i := &Issuer{keys: []Key{{KID: "rsa-1", Alg: "RS256", Priv: rk}, {KID: "ec-1", Alg: "ES256", Priv: ek}}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if i.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": i.URL, "jwks_uri": i.URL + "/jwks",
			"authorization_endpoint":                i.URL + "/authorize",
			"token_endpoint":                        i.URL + "/token",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		i.jwksHits.Add(1)
		if i.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		i.mu.Lock()
		set := jose.JSONWebKeySet{}
		for _, k := range i.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Priv.Public(), KeyID: k.KID, Algorithm: k.Alg, Use: "sig"})
		}
		i.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	i.srv = httptest.NewServer(mux)
	i.URL = i.srv.URL
	t.Cleanup(i.srv.Close)
	return i
}

// SetDown makes discovery and the JWKS answer 503 (or serve again).
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// JWKSHits counts requests to the JWKS endpoint.
func (i *Issuer) JWKSHits() int64 { return i.jwksHits.Load() }

// Keys returns the current signing keys.
func (i *Issuer) Keys() []Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]Key(nil), i.keys...)
}

// Rotate replaces every key with a fresh RS256 key named kid.
func (i *Issuer) Rotate(t testing.TB, kid string) {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	i.mu.Lock()
	i.keys = []Key{{KID: kid, Alg: "RS256", Priv: rk}}
	i.mu.Unlock()
}

// Claims returns the claims of a valid ID token for sub and audience.
func (i *Issuer) Claims(sub, aud string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": i.URL, "sub": sub, "aud": aud,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
}

// Token signs a valid ID token for sub and aud with the first key; extra
// claims are merged in (a nil value deletes a claim).
func (i *Issuer) Token(t testing.TB, sub, aud string, extra map[string]any) string {
	t.Helper()
	c := i.Claims(sub, aud)
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return i.Sign(t, i.Keys()[0], nil, c)
}

// Sign signs claims with key, adding header fields (kid is the key's
// unless header names one).
func (i *Issuer) Sign(t testing.TB, key Key, header map[string]any, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return SignRaw(t, key, header, payload)
}

// SignRaw signs an arbitrary payload.
func SignRaw(t testing.TB, key Key, header map[string]any, payload []byte) string {
	t.Helper()
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"kid": key.KID}}
	for k, v := range header {
		opts.ExtraHeaders[jose.HeaderKey(k)] = v
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Alg), Key: key.Priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Forge builds a compact JWS from a raw header and claims with the given
// signature bytes: for alg none and other hand-made attacks.
func Forge(t testing.TB, header, claims map[string]any, sig []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return b64(h) + "." + b64(c) + "." + b64(sig)
}

// HS256 signs header and claims with an HMAC key: the RS→HS confusion
// attack when the key is an RSA public key's bytes.
func HS256(t testing.TB, header, claims map[string]any, secret []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := b64(h) + "." + b64(c)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + b64(m.Sum(nil))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
