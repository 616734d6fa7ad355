package config

import (
	"strings"
	"testing"
	"time"
)

// dpop.nonce_every is a duration; absent, no nonce is asked for.
func TestDPoPNonceEvery(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(valid, "limits:", "dpop: {nonce_every: 5m}\nlimits:", 1)), goodEnv)
	if err != nil || c.DPoP.NonceEvery != 5*time.Minute {
		t.Fatalf("nonce_every = %v, %v; want 5m", c.DPoP.NonceEvery, err)
	}
	c, err = Parse([]byte(valid), goodEnv)
	if err != nil || c.DPoP.NonceEvery != 0 {
		t.Fatalf("default nonce_every = %v, %v; want none", c.DPoP.NonceEvery, err)
	}
}
