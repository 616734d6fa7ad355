package identity

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/errandhq/errand/broker"
)

// DefaultCacheSize bounds the verified-token cache.
const DefaultCacheSize = 65536

// tokenCache remembers successful verifications, keyed by the SHA-256 of
// the token, until the token's exp: an agent presents the same ID token on
// every call of its task, and verifying its signature and claims again
// each time is most of an authentication's cost. Failures are never
// cached; a token is served from the cache only while unexpired on the
// verifier's clock, and never past what verifying it again would accept
// (the issuer's configuration is fixed for the process's life).
type tokenCache struct {
	mu      sync.RWMutex
	max     int
	entries map[[32]byte]cached
}

type cached struct {
	p   broker.Principal
	exp time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: make(map[[32]byte]cached)}
}

func (c *tokenCache) get(key [32]byte, now time.Time) (broker.Principal, bool) {
	c.mu.RLock()
	e, ok := c.entries[key]
	c.mu.RUnlock()
	if !ok || !now.Before(e.exp) {
		return broker.Principal{}, false
	}
	return e.p, true
}

func (c *tokenCache) put(key [32]byte, p broker.Principal, exp, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.exp) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.max {
			// Still full of live tokens: start again rather than grow.
			clear(c.entries)
		}
	}
	c.entries[key] = cached{p: p, exp: exp}
}

func tokenKey(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }
