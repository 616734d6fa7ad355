package broker

import (
	"strings"
	"testing"
)

// TestShownIDHidesVaultHandles: a Vault accessor or lease id is a handle
// on a secret and is shown only as its digest; a token's jti as it is.
func TestShownIDHidesVaultHandles(t *testing.T) {
	for _, kind := range []CredentialKind{KindVaultToken, KindVaultLease} {
		c := Credential{ID: "hvs.accessor-or-lease", Kind: kind}
		if got := c.ShownID(); got != "sha256:"+HashID(c.ID) || strings.Contains(got, c.ID) {
			t.Errorf("%s shown as %q", kind, got)
		}
	}
	for _, kind := range []CredentialKind{KindJWT, KindIDJAG} {
		if got := (Credential{ID: "j-1", Kind: kind}).ShownID(); got != "j-1" {
			t.Errorf("%s shown as %q, want its jti", kind, got)
		}
	}
}
