package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keySet is an oidc.KeySet that caches an issuer's JWKS and refetches it
// on an unknown kid at most once per cooldown.
type keySet struct {
	url      string
	client   *http.Client
	algs     []jose.SignatureAlgorithm
	cooldown time.Duration
	now      func() time.Time

	fetchMu sync.Mutex // serialises fetches; never held by readers of keys

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	lastFetch time.Time
	lastErr   error // of the last fetch; nil after a success
	fetches   int
}

// failRetry is how soon a failed fetch may be retried: an outage must not
// lock new keys out for a whole cool-down.
const failRetry = 2 * time.Second

// fetchReport carries a JWKS fetch failure out of a verification, since
// go-oidc flattens the key set's error into a string: a provider that
// cannot be reached is an outage (503), not a bad token (401).
type fetchReport struct{ err error }

type reportKey struct{}

func report(ctx context.Context, err error) {
	if r, ok := ctx.Value(reportKey{}).(*fetchReport); ok && err != nil {
		r.err = err
	}
}

// VerifySignature implements oidc.KeySet. go-oidc has already checked the
// algorithm against the issuer's pinned list.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jws: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("exactly one signature is required")
	}
	kid := jws.Signatures[0].Header.KeyID
	if payload, ok := k.try(jws, kid, k.cached()); ok {
		return payload, nil
	}
	keys, err := k.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if payload, ok := k.try(jws, kid, keys); ok {
		return payload, nil
	}
	return nil, fmt.Errorf("no key of the issuer verifies the signature")
}

func (k *keySet) try(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) ([]byte, bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, true
		}
	}
	return nil, false
}

func (k *keySet) cached() []jose.JSONWebKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys
}

// refresh refetches the JWKS unless it was fetched within the cooldown.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	k.mu.Lock()
	wait := k.cooldown
	if k.lastErr != nil {
		wait = failRetry
	}
	if !k.lastFetch.IsZero() && k.now().Sub(k.lastFetch) < wait {
		keys, lastErr := k.keys, k.lastErr
		k.mu.Unlock()
		report(ctx, lastErr)
		return keys, nil
	}
	k.lastFetch = k.now()
	k.fetches++
	k.mu.Unlock()
	// The fetch belongs to every later caller too: a client that hangs up
	// must not abort it.
	keys, err := fetchJWKS(context.WithoutCancel(ctx), k.client, k.url)
	k.mu.Lock()
	k.lastErr = err
	if err == nil {
		k.keys = keys
	}
	k.mu.Unlock()
	if err != nil {
		report(ctx, err)
		return k.cached(), err
	}
	return keys, nil
}

// Fetches counts JWKS fetches, for tests and metrics.
func (k *keySet) Fetches() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetches
}

func fetchJWKS(ctx context.Context, c *http.Client, url string) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s answered %s", url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	// Only public signing keys are of use; drop anything else.
	out := set.Keys[:0]
	for _, key := range set.Keys {
		if key.Valid() && key.IsPublic() && (key.Use == "" || key.Use == "sig") {
			out = append(out, key)
		}
	}
	return out, nil
}
