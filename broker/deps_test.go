package broker_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBrokerImportsNoIOLibrary holds the architecture: the domain core
// depends on no HTTP, SQL, JOSE, OIDC, Vault or Cedar library.
func TestBrokerImportsNoIOLibrary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/errandhq/errand/broker").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{"net/http", "database/sql", "github.com/jackc/", "github.com/coreos/go-oidc",
		"github.com/golang-jwt/", "github.com/go-jose/", "github.com/hashicorp/vault", "github.com/cedar-policy/",
		"modernc.org/sqlite", "github.com/go-chi/"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f) {
				t.Errorf("broker depends on %s", dep)
			}
		}
	}
}
