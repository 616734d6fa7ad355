package broker

import (
	"strings"
	"testing"
)

// TestShownIDHidesVaultHandles: a Vault accessor or lease id is a handle
// on a secret and is shown only as its digest; a token's jti as it is.
func TestShownIDHidesVaultHandles(t *testing.T) {
	for _, kind := range []string{KindVaultToken, KindVaultLease} {
		c := Credential{JTI: "hvs.accessor-or-lease", Kind: kind}
		if got := c.ShownID(); got != "sha256:"+HashID(c.JTI) || strings.Contains(got, c.JTI) {
			t.Errorf("%s shown as %q", kind, got)
		}
	}
	for _, kind := range []string{"jwt", KindIDJAG} {
		if got := (Credential{JTI: "j-1", Kind: kind}).ShownID(); got != "j-1" {
			t.Errorf("%s shown as %q, want its jti", kind, got)
		}
	}
}
