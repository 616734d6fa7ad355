package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/dpop/dpoptest"
)

const htu = "https://errand.example/v1/tasks/tsk_1/tokens"

// memReplay is a ReplayCache in memory, for tests of the verifier alone
// (the store's shared cache is tested by store/storetest and httpapi).
type memReplay struct {
	mu   sync.Mutex
	seen map[string]time.Time
	err  error
}

func (m *memReplay) Remember(_ context.Context, id string, exp time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return false, m.err
	}
	if m.seen == nil {
		m.seen = map[string]time.Time{}
	}
	if _, ok := m.seen[id]; ok {
		return false, nil
	}
	m.seen[id] = exp
	return true, nil
}

var now = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

func newVerifier(t testing.TB) (*Verifier, *memReplay) {
	t.Helper()
	r := &memReplay{}
	v, err := New(Config{Now: func() time.Time { return now }, Replay: r})
	if err != nil {
		t.Fatal(err)
	}
	return v, r
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func goodClaims() map[string]any {
	return map[string]any{"jti": "j-" + strings.Repeat("x", 8), "htm": "POST", "htu": htu, "iat": now.Unix()}
}

func req() Request { return Request{Method: "POST", URL: htu} }

func wantInvalid(t *testing.T, err error, detail string) {
	t.Helper()
	if !errors.Is(err, ErrInvalidProof) {
		t.Fatalf("err = %v, want ErrInvalidProof", err)
	}
	if !strings.Contains(err.Error(), detail) {
		t.Fatalf("err = %v, want it to say %q", err, detail)
	}
}

func TestX05ProofOfEachAlgorithmVerifies(t *testing.T) {
	v, _ := newVerifier(t)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]crypto.Signer{"ES256": p256(t), "EdDSA": ed, "PS256": rk} {
		t.Run(name, func(t *testing.T) {
			proof, err := NewProof(k, "POST", htu, "", now)
			if err != nil {
				t.Fatal(err)
			}
			p, err := v.Verify(context.Background(), proof, req())
			if err != nil {
				t.Fatal(err)
			}
			want, _ := KeyThumbprint(k)
			if p.JKT != want || len(p.JKT) != 43 {
				t.Fatalf("jkt %q, want %q", p.JKT, want)
			}
		})
	}
}

// RFC 7638 §3.1's example key has a known thumbprint.
func TestThumbprintRFC7638Example(t *testing.T) {
	raw := `{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(&k)
	if err != nil || got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint %q, %v", got, err)
	}
}

func TestX05ReplayedJTIRefused(t *testing.T) {
	v, _ := newVerifier(t)
	proof, err := NewProof(p256(t), "POST", htu, "", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), proof, req()); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), proof, req())
	wantInvalid(t, err, "jti was used before")
}

func TestX05ReplayCacheOutageIsNotAVerdict(t *testing.T) {
	v, r := newVerifier(t)
	r.err = errors.New("store down")
	proof, _ := NewProof(p256(t), "POST", htu, "", now)
	_, err := v.Verify(context.Background(), proof, req())
	if err == nil || errors.Is(err, ErrInvalidProof) {
		t.Fatalf("err = %v, want the cache's error", err)
	}
}

func TestX05WrongHTMRefused(t *testing.T) {
	v, _ := newVerifier(t)
	proof, _ := NewProof(p256(t), "GET", htu, "", now)
	_, err := v.Verify(context.Background(), proof, req())
	wantInvalid(t, err, "htm")
}

func TestX05HTU(t *testing.T) {
	v, _ := newVerifier(t)
	for _, tc := range []struct {
		name, htu string
		ok        bool
	}{
		{"same", htu, true},
		{"query and fragment ignored", htu + "?a=b#c", true},
		{"default port and case", "HTTPS://Errand.Example:443/v1/tasks/tsk_1/tokens", true},
		{"unreserved percent-encoded", "https://errand.example/v1/tasks/tsk%5F1/tokens", true},
		{"another host", "https://evil.example/v1/tasks/tsk_1/tokens", false},
		{"another path", "https://errand.example/v1/tasks/tsk_2/tokens", false},
		{"another scheme", "http://errand.example/v1/tasks/tsk_1/tokens", false},
		{"another port", "https://errand.example:8443/v1/tasks/tsk_1/tokens", false},
		{"relative", "/v1/tasks/tsk_1/tokens", false},
		{"trailing slash", htu + "/", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proof, _ := NewProof(p256(t), "POST", tc.htu, "", now)
			_, err := v.Verify(context.Background(), proof, req())
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				wantInvalid(t, err, "htu")
			}
		})
	}
}

func TestX05IATWindow(t *testing.T) {
	v, _ := newVerifier(t)
	for _, tc := range []struct {
		name string
		iat  time.Time
		ok   bool
	}{
		{"now", now, true},
		{"59 s old", now.Add(-59 * time.Second), true},
		{"59 s ahead", now.Add(59 * time.Second), true},
		{"stale", now.Add(-61 * time.Second), false},
		{"future", now.Add(61 * time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proof, _ := NewProof(p256(t), "POST", htu, "", tc.iat)
			_, err := v.Verify(context.Background(), proof, req())
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				wantInvalid(t, err, "iat")
			}
		})
	}
}

func TestX05MalformedProofsRefused(t *testing.T) {
	v, _ := newVerifier(t)
	k := p256(t)
	hdr := func(typ string, jwk any) map[string]any {
		return map[string]any{"typ": typ, "alg": "ES256", "jwk": jwk}
	}
	priv, err := (&jose.JSONWebKey{Key: k}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var privJWK map[string]any
	_ = json.Unmarshal(priv, &privJWK)
	secret := []byte("0123456789abcdef0123456789abcdef")
	hs256 := func(input []byte) []byte { m := hmac.New(sha256.New, secret); m.Write(input); return m.Sum(nil) }
	noClaim := func(name string) map[string]any { c := goodClaims(); delete(c, name); return c }
	other := p256(t)
	for _, tc := range []struct {
		name, proof, detail string
	}{
		{"typ jwt", dpoptest.Compact(t, hdr("JWT", dpoptest.JWK(t, k.Public())), goodClaims(), dpoptest.ES256(k)), "typ"},
		{"typ missing", dpoptest.Compact(t, map[string]any{"alg": "ES256", "jwk": dpoptest.JWK(t, k.Public())}, goodClaims(), dpoptest.ES256(k)), "typ"},
		{"private key in jwk", dpoptest.Compact(t, hdr(TokenType, privJWK), goodClaims(), dpoptest.ES256(k)), "private"},
		{"no jwk", dpoptest.Compact(t, map[string]any{"typ": TokenType, "alg": "ES256"}, goodClaims(), dpoptest.ES256(k)), "jwk"},
		{"symmetric HS256", dpoptest.Compact(t, map[string]any{"typ": TokenType, "alg": "HS256",
			"jwk": map[string]any{"kty": "oct", "k": b64(secret)}}, goodClaims(), hs256), "accepted algorithm"},
		{"alg none", dpoptest.Compact(t, map[string]any{"typ": TokenType, "alg": "none", "jwk": dpoptest.JWK(t, k.Public())},
			goodClaims(), func([]byte) []byte { return nil }), "accepted algorithm"},
		{"signed by another key", dpoptest.Compact(t, hdr(TokenType, dpoptest.JWK(t, k.Public())), goodClaims(), dpoptest.ES256(other)), "signature"},
		{"no jti", dpoptest.Compact(t, hdr(TokenType, dpoptest.JWK(t, k.Public())), noClaim("jti"), dpoptest.ES256(k)), "jti"},
		{"no iat", dpoptest.Compact(t, hdr(TokenType, dpoptest.JWK(t, k.Public())), noClaim("iat"), dpoptest.ES256(k)), "iat"},
		{"iat a string", dpoptest.Compact(t, hdr(TokenType, dpoptest.JWK(t, k.Public())),
			func() map[string]any { c := goodClaims(); c["iat"] = "now"; return c }(), dpoptest.ES256(k)), "iat"},
		{"no htm", dpoptest.Compact(t, hdr(TokenType, dpoptest.JWK(t, k.Public())), noClaim("htm"), dpoptest.ES256(k)), "htm"},
		{"not a JWS", "a.b", "JWS"},
		{"too large", strings.Repeat("a", MaxProofBytes+1), "larger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.proof, req())
			wantInvalid(t, err, tc.detail)
		})
	}
}

// A P-384 key is refused for ES256, which is P-256 only (RFC 7518 §3.4).
func TestX05KeyMustFitAlgorithm(t *testing.T) {
	v, _ := newVerifier(t)
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	proof := dpoptest.Compact(t, map[string]any{"typ": TokenType, "alg": "ES256", "jwk": dpoptest.JWK(t, k.Public())},
		goodClaims(), func([]byte) []byte { return make([]byte, 64) })
	_, err = v.Verify(context.Background(), proof, req())
	wantInvalid(t, err, "P-256")
}

func TestX05BoundTokenProof(t *testing.T) {
	v, _ := newVerifier(t)
	k := p256(t)
	jkt, _ := KeyThumbprint(k)
	const token = "eyJ.the.token"
	bound := Request{Method: "GET", URL: "https://api.example/repos", AccessToken: token}
	t.Run("accepted", func(t *testing.T) {
		proof, _ := NewProof(k, "GET", bound.URL, token, now)
		if _, err := v.VerifyBound(context.Background(), proof, bound, jkt); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another token's ath", func(t *testing.T) {
		proof, _ := NewProof(k, "GET", bound.URL, "eyJ.another.token", now)
		_, err := v.VerifyBound(context.Background(), proof, bound, jkt)
		wantInvalid(t, err, "ath")
	})
	t.Run("no ath", func(t *testing.T) {
		proof, _ := NewProof(k, "GET", bound.URL, "", now)
		_, err := v.VerifyBound(context.Background(), proof, bound, jkt)
		wantInvalid(t, err, "ath")
	})
	t.Run("another key", func(t *testing.T) {
		proof, _ := NewProof(p256(t), "GET", bound.URL, token, now)
		_, err := v.VerifyBound(context.Background(), proof, bound, jkt)
		wantInvalid(t, err, "bound")
	})
	t.Run("without proof", func(t *testing.T) {
		_, err := v.VerifyBound(context.Background(), "", bound, jkt)
		wantInvalid(t, err, "JWS")
	})
}

func TestNewRefusesSymmetricAlgorithms(t *testing.T) {
	for _, alg := range []string{"HS256", "none", "RS1"} {
		if _, err := New(Config{Algorithms: []string{alg}, Replay: &memReplay{}}); err == nil {
			t.Errorf("New accepted %s", alg)
		}
	}
}

// FuzzDPoPProof: no input panics the verifier, and no change to a valid
// proof verifies: whatever verifies has the header and claims, byte for
// byte, of the one proof signed (only its encoding may differ). The key
// and proof are fixed (Ed25519 signs deterministically), so that every
// fuzzing worker holds the same proof.
func FuzzDPoPProof(f *testing.F) {
	k := ed25519.NewKeyFromSeed([]byte("errand-dpop-fuzz-key-seed-32byte"))
	good := dpoptest.Compact(f, map[string]any{"typ": TokenType, "alg": "EdDSA", "jwk": dpoptest.JWK(f, k.Public())},
		goodClaims(), func(input []byte) []byte { return ed25519.Sign(k, input) })
	segments := func(proof string) (string, string) {
		parts := strings.Split(proof, ".")
		if len(parts) != 3 {
			return "", ""
		}
		h, _ := base64.RawURLEncoding.DecodeString(parts[0])
		c, _ := base64.RawURLEncoding.DecodeString(parts[1])
		return string(h), string(c)
	}
	gh, gc := segments(good)
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Fuzz(func(t *testing.T, proof string) {
		v, _ := newVerifier(t)
		if _, err := v.Verify(context.Background(), proof, req()); err != nil {
			return
		}
		if h, c := segments(strings.TrimSpace(proof)); h != gh || c != gc {
			t.Fatalf("a changed proof verified: %q", proof)
		}
	})
}

func TestX05ServerNonce(t *testing.T) {
	clock := now
	nonces, err := NewNonces([]byte(strings.Repeat("k", 32)), time.Minute, func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewNonces([]byte(strings.Repeat("o", 32)), time.Minute, func() time.Time { return clock })
	v, err := New(Config{Now: func() time.Time { return clock }, Replay: &memReplay{}, Nonces: nonces})
	if err != nil {
		t.Fatal(err)
	}
	k := p256(t)
	issued := v.Nonce()
	tampered := issued[:31] + "A"
	if tampered == issued {
		tampered = issued[:31] + "B"
	}
	for _, tc := range []struct {
		name, nonce string
		after       time.Duration
		want        error
	}{
		{"current", issued, 0, nil},
		{"from the last period", issued, time.Minute, nil},
		{"none", "", 0, ErrUseNonce},
		{"two periods old", issued, 2 * time.Minute, ErrUseNonce},
		{"another key's", other.Issue(), 0, ErrUseNonce},
		{"tampered", tampered, 0, ErrUseNonce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock = now.Add(tc.after)
			defer func() { clock = now }()
			proof, err := NewProofWithNonce(k, "POST", htu, "", tc.nonce, clock)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(context.Background(), proof, req()); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// BenchmarkCheck is the CPU a proof costs a server, the replay cache's
// round trip aside (ES256, the algorithm clients use most).
func BenchmarkCheck(b *testing.B) {
	v, _ := newVerifier(b)
	proof, err := NewProof(p256(b), "POST", htu, "", now)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Check(proof, req()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestX05Ed25519FullySpecifiedName: a proof named "Ed25519" (RFC 9864), as
// oauth4webapi and openid-client sign with an Ed25519 key, verifies; the
// same name with another key, or with a signature of another key, does not.
func TestX05Ed25519FullySpecifiedName(t *testing.T) {
	v, _ := newVerifier(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	header := map[string]any{"typ": TokenType, "alg": "Ed25519", "jwk": dpoptest.JWK(t, pub)}
	proof := dpoptest.Compact(t, header, goodClaims(), func(in []byte) []byte { return ed25519.Sign(priv, in) })
	p, err := v.Verify(context.Background(), proof, req())
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := KeyThumbprint(priv); p.JKT != want {
		t.Fatalf("jkt %q, want %q", p.JKT, want)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged := dpoptest.Compact(t, header, goodClaims(), func(in []byte) []byte { return ed25519.Sign(other, in) })
	_, err = v.Verify(context.Background(), forged, req())
	wantInvalid(t, err, "signature")
	ec := p256(t)
	wrongKey := dpoptest.Compact(t, map[string]any{"typ": TokenType, "alg": "Ed25519", "jwk": dpoptest.JWK(t, &ec.PublicKey)},
		goodClaims(), dpoptest.ES256(ec))
	_, err = v.Verify(context.Background(), wrongKey, req())
	wantInvalid(t, err, "Ed25519 key")
}

// TestX05Ed25519NameRefusesCrit: the Ed25519 path, which verifies the
// signature itself, refuses a crit header as go-jose does for EdDSA.
func TestX05Ed25519NameRefusesCrit(t *testing.T) {
	v, _ := newVerifier(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	for _, alg := range []string{"EdDSA", "Ed25519"} {
		header := map[string]any{"typ": TokenType, "alg": alg, "jwk": dpoptest.JWK(t, pub), "crit": []string{"urn:x-unknown"}, "urn:x-unknown": true}
		proof := dpoptest.Compact(t, header, goodClaims(), func(in []byte) []byte { return ed25519.Sign(priv, in) })
		if _, err := v.Verify(context.Background(), proof, req()); !errors.Is(err, ErrInvalidProof) {
			t.Fatalf("alg %s with crit: %v, want a refusal", alg, err)
		}
	}
}

// TestX08ProofErrorsQuoteNoHeader: a refusal's detail never carries the
// proof's own bytes (an alg of the attacker's choosing, markup, length).
func TestX08ProofErrorsQuoteNoHeader(t *testing.T) {
	v, _ := newVerifier(t)
	k := p256(t)
	evil := `HS256<img src=x onerror=alert(1)>` + strings.Repeat("A", 4000)
	proof := dpoptest.Compact(t, map[string]any{"typ": TokenType, "alg": evil, "jwk": dpoptest.JWK(t, &k.PublicKey)}, goodClaims(), dpoptest.ES256(k))
	_, err := v.Verify(context.Background(), proof, req())
	if !errors.Is(err, ErrInvalidProof) || strings.Contains(err.Error(), "img") || len(err.Error()) > 200 {
		t.Fatalf("refusal %q", err)
	}
}
