package resource

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// algorithms are the signature algorithms of Errand's access tokens.
var algorithms = map[string]struct{}{"EdDSA": {}, "ES256": {}}

// publicKey is a verification key of the JWKS.
type publicKey struct {
	alg string
	key any
}

// keySet is Errand's JWKS, fetched on demand. An unknown kid refetches it
// at most once per cooldown, whatever the number of requests naming
// unknown kids (no refetch storm); a failed fetch keeps the keys held.
type keySet struct {
	url      string
	client   *http.Client
	cooldown time.Duration
	now      func() time.Time

	mu      sync.RWMutex
	keys    map[string]publicKey
	fetchMu sync.Mutex // one fetch at a time
	lastTry time.Time  // of a fetch, guarded by fetchMu
	fetches atomic.Int64
}

// key returns the key named kid, refetching the set when kid is unknown
// and the cool-down has passed.
func (s *keySet) key(ctx context.Context, kid string) (publicKey, error) {
	if k, ok := s.lookup(kid); ok {
		return k, nil
	}
	if kid == "" {
		return publicKey{}, invalidToken("the token names no key")
	}
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	// Another request may have fetched while this one waited.
	if k, ok := s.lookup(kid); ok {
		return k, nil
	}
	if !s.lastTry.IsZero() && s.now().Sub(s.lastTry) < s.cooldown {
		return publicKey{}, invalidToken("unknown signing key")
	}
	if err := s.fetchLocked(ctx); err != nil {
		return publicKey{}, unavailable("cannot fetch Errand's signing keys")
	}
	if k, ok := s.lookup(kid); ok {
		return k, nil
	}
	return publicKey{}, invalidToken("unknown signing key")
}

func (s *keySet) lookup(kid string) (publicKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[kid]
	return k, ok
}

// refresh refetches the set (rotation), under the same lock as key.
func (s *keySet) refresh(ctx context.Context) error {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	return s.fetchLocked(ctx)
}

func (s *keySet) fetchLocked(ctx context.Context) error {
	s.lastTry = s.now()
	s.fetches.Add(1)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return err
	}
	res, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("JWKS: %s", res.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("JWKS: %w", err)
	}
	keys := map[string]publicKey{}
	for _, k := range set.Keys {
		if pk, ok := usable(k); ok {
			keys[k.KeyID] = pk
		}
	}
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
	return nil
}

// usable returns k as a verification key when it is a public signing key
// of an algorithm Errand signs with: never a symmetric or private key.
func usable(k jose.JSONWebKey) (publicKey, bool) {
	if k.KeyID == "" || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
		return publicKey{}, false
	}
	switch key := k.Key.(type) {
	case ed25519.PublicKey:
		if k.Algorithm == "" || k.Algorithm == "EdDSA" {
			return publicKey{alg: "EdDSA", key: key}, true
		}
	case *ecdsa.PublicKey:
		if key.Curve == elliptic.P256() && (k.Algorithm == "" || k.Algorithm == "ES256") {
			return publicKey{alg: "ES256", key: key}, true
		}
	}
	return publicKey{}, false
}
