package jwt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/broker"
)

// TestH02StoredKeyMustBeTheKeyItClaims: a stored key row is used only if
// it is the key it claims to be. Each case writes a row the way someone
// with write access to the database could (the first one is the attack of
// H02: the current key's row deleted and inserted again with the same
// sealed private key and the attacker's public JWK). The set is refused as
// a whole: the JWKS keeps serving Errand's keys only, Errand's tokens keep
// verifying and new ones are signed, one keys.refused event and one ERROR
// line are raised however often the set is read, no rotation builds on
// it, and a fresh replica refuses to start on it. Retiring the refused
// row (rows are never deleted) is the way out.
func TestH02StoredKeyMustBeTheKeyItClaims(t *testing.T) {
	ctx := context.Background()
	attPub, attPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attKID, _ := kidOf(attPub)
	attJWK, _ := publicJWK(attPub, attKID, AlgEdDSA)
	var attacker struct{ X string }
	_ = json.Unmarshal(attJWK, &attacker)

	// fresh seals a newly generated key under kid, as only a holder of
	// system_secret can.
	fresh := func(t *testing.T, i *Issuer, kid func(pub ed25519.PublicKey) string) (broker.SigningKey, ed25519.PublicKey) {
		t.Helper()
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k := kid(pub)
		sealed, err := i.sealer.seal(priv, k)
		if err != nil {
			t.Fatal(err)
		}
		jwk, _ := publicJWK(pub, k, AlgEdDSA)
		return broker.SigningKey{KID: k, Alg: AlgEdDSA, Private: sealed, PublicJWK: jwk, State: broker.KeyPrevious,
			CreatedAt: time.Now().UTC(), DeactivatedAt: time.Now().UTC()}, pub
	}
	thumb := func(pub ed25519.PublicKey) string { k, _ := kidOf(pub); return k }

	cases := []struct {
		name   string
		reason string
		// tamper changes the stored rows and returns the kid of the row to
		// retire.
		tamper func(t *testing.T, i *Issuer, ks *memKeys) string
	}{
		{"current key deleted and inserted with the attacker's public JWK", reasonPublicJWK,
			func(t *testing.T, i *Issuer, ks *memKeys) string {
				for j, k := range ks.keys {
					if k.State == broker.KeyCurrent {
						jwk, _ := publicJWK(attPub, k.KID, k.Alg)
						ks.keys[j].PublicJWK = jwk
						return k.KID
					}
				}
				t.Fatal("no current key")
				return ""
			}},
		{"new key whose stored public half is the attacker's", reasonPublicJWK,
			func(t *testing.T, i *Issuer, ks *memKeys) string {
				k, _ := fresh(t, i, thumb)
				k.PublicJWK, _ = publicJWK(attPub, k.KID, AlgEdDSA)
				ks.keys = append(ks.keys, k)
				return k.KID
			}},
		{"new key whose kid is not its thumbprint", reasonKID,
			func(t *testing.T, i *Issuer, ks *memKeys) string {
				k, _ := fresh(t, i, func(ed25519.PublicKey) string { return "errand-key-1" })
				ks.keys = append(ks.keys, k)
				return k.KID
			}},
		{"new key whose alg does not fit it", reasonAlg,
			func(t *testing.T, i *Issuer, ks *memKeys) string {
				k, pub := fresh(t, i, thumb)
				k.Alg = AlgES256
				k.PublicJWK, _ = publicJWK(pub, k.KID, AlgES256)
				ks.keys = append(ks.keys, k)
				return k.KID
			}},
		{"new key whose stored JWK carries a private half", reasonPublicJWK,
			func(t *testing.T, i *Issuer, ks *memKeys) string {
				k, _ := fresh(t, i, thumb)
				k.PublicJWK, _ = (&jose.JSONWebKey{Key: attPriv, KeyID: k.KID, Algorithm: AlgEdDSA, Use: "sig"}).MarshalJSON()
				ks.keys = append(ks.keys, k)
				return k.KID
			}},
		{"current key's sealed private key copied under the attacker's kid", reasonUnseal,
			func(t *testing.T, i *Issuer, ks *memKeys) string {
				for _, k := range ks.keys {
					if k.State == broker.KeyCurrent {
						ks.keys = append(ks.keys, broker.SigningKey{KID: attKID, Alg: AlgEdDSA, Private: k.Private,
							PublicJWK: attJWK, State: broker.KeyPrevious, CreatedAt: k.CreatedAt, DeactivatedAt: time.Now().UTC()})
						return attKID
					}
				}
				t.Fatal("no current key")
				return ""
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := &memKeys{}
			var logs syncBuf
			i, err := New(ctx, Config{Issuer: iss, Keys: ks, Secret: secret, Logger: newTestLogger(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			p := KeyPolicy{RotateEvery: 24 * time.Hour, Overlap: time.Hour}
			if _, err := i.Maintain(ctx, p); err != nil {
				t.Fatal(err)
			}
			before := string(i.JWKS())
			tok, err := i.Sign(ctx, sample(time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			ks.mu.Lock()
			bad := c.tamper(t, i, ks)
			ks.mu.Unlock()

			for n := 0; n < 3; n++ {
				err := i.Reload(ctx)
				if err == nil || !strings.Contains(err.Error(), c.reason) {
					t.Fatalf("reload %d of the tampered set: %v, want a refusal: %s", n, err, c.reason)
				}
			}
			if got := string(i.JWKS()); got != before || strings.Contains(got, attacker.X) {
				t.Fatalf("JWKS after the tampering:\n%s\nwant as before:\n%s", got, before)
			}
			if _, err := i.Verify(ctx, tok); err != nil {
				t.Fatalf("Errand's token no longer verifies: %v", err)
			}
			again, err := i.Sign(ctx, sample(time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := i.Verify(ctx, again); err != nil {
				t.Fatalf("a token signed after the tampering does not verify: %v", err)
			}
			if _, err := i.Maintain(ctx, KeyPolicy{RotateEvery: time.Nanosecond, Overlap: time.Hour}); err == nil {
				t.Fatal("a rotation went ahead on a tampered set")
			}
			if _, err := i.Rotate(ctx, p, broker.SystemActor, true); err == nil || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("a forced rotation on a tampered set: %v", err)
			}

			// One alarm: one audit event, one ERROR line, one count.
			var refused []broker.AuditEvent
			for _, e := range ks.events {
				if e.Type == broker.EventKeysRefused {
					refused = append(refused, e)
				}
			}
			if len(refused) != 1 || refused[0].Actor != broker.SystemActor {
				t.Fatalf("keys.refused events: %+v, want one by the system", refused)
			}
			var d struct{ KID, State, Reason string }
			if err := json.Unmarshal(refused[0].Detail, &d); err != nil || d.KID != bad || d.Reason != c.reason {
				t.Fatalf("keys.refused detail %s, want kid %s and reason %q", refused[0].Detail, bad, c.reason)
			}
			if n := strings.Count(logs.String(), "level=ERROR msg=\"signing key refused"); n != 1 || i.RefusedKeys() != 1 {
				t.Fatalf("%d ERROR lines and %d refused keys counted, want 1 and 1:\n%s", n, i.RefusedKeys(), logs.String())
			}

			if _, err := New(ctx, Config{Issuer: iss, Keys: ks, Secret: secret}); err == nil {
				t.Fatal("a fresh replica started on a tampered set")
			}
			if err := i.Check(keyRow(t, ks, bad)); err == nil || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("Check of the tampered row: %v", err)
			}

			// The way out, as errand keys does it: retire the refused key
			// (a refused current key too); the next key then signs.
			ops, err := NewOffline(Config{Issuer: iss, Keys: ks, Secret: secret})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ops.Retire(ctx, bad, broker.Actor{Kind: "operator", Subject: "ops"}); err != nil {
				t.Fatalf("retire the refused key: %v", err)
			}
			if _, err := i.Maintain(ctx, p); err != nil {
				t.Fatalf("maintenance after the retirement: %v", err)
			}
			j, err := New(ctx, Config{Issuer: iss, Keys: ks, Secret: secret})
			if err != nil {
				t.Fatalf("a replica on the repaired set: %v", err)
			}
			if got := string(j.JWKS()); strings.Contains(got, attacker.X) || strings.Contains(got, bad) {
				t.Fatalf("JWKS of the repaired set: %s", got)
			}
		})
	}
}

// TestH02JWKSIsDerivedFromThePrivateKeys: the published keys are the
// private keys' public halves, for both algorithms, byte for byte what
// Errand stored when it made them.
func TestH02JWKSIsDerivedFromThePrivateKeys(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		ks := &memKeys{}
		i := newIssuer(t, ks, alg, nil)
		if _, err := i.Maintain(context.Background(), KeyPolicy{Overlap: time.Hour}); err != nil {
			t.Fatal(err)
		}
		var set struct{ Keys []json.RawMessage }
		if err := json.Unmarshal(i.JWKS(), &set); err != nil || len(set.Keys) != 2 {
			t.Fatalf("%s: JWKS %s: %v", alg, i.JWKS(), err)
		}
		for _, k := range ks.keys {
			found := false
			for _, pub := range set.Keys {
				found = found || bytes.Equal(pub, k.PublicJWK)
			}
			if !found {
				t.Fatalf("%s: key %s is not served as stored: %s", alg, k.KID, i.JWKS())
			}
			if err := i.Check(k); err != nil {
				t.Fatalf("%s: Errand's own key refused: %v", alg, err)
			}
		}
	}
}

func keyRow(t *testing.T, ks *memKeys, kid string) broker.SigningKey {
	t.Helper()
	for _, k := range ks.keys {
		if k.KID == kid {
			return k
		}
	}
	t.Fatalf("no key %s", kid)
	return broker.SigningKey{}
}

// syncBuf is a log destination safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestLogger(w *syncBuf) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
