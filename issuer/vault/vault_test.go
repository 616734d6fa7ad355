package vault_test

import (
	"context"
	"os"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/issuer/vault"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testvault.Stop()
	os.Exit(code)
}

// TestRunKeepsErrandsOwnTokenAlive: a renewable token with a TTL of a few
// seconds outlives its TTL while Run renews it.
func TestRunKeepsErrandsOwnTokenAlive(t *testing.T) {
	v := testvault.Shared(t)
	root := v.Root()
	_, policy := v.Token(t, vault.Policy("")) // writes README's policy under a name of its own
	renewable := true
	sec, err := root.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{policy}, NoDefaultPolicy: true,
		TTL: "3s", ExplicitMaxTTL: "1h", Renewable: &renewable})
	if err != nil {
		t.Fatal(err)
	}
	tok := sec.Auth.ClientToken
	i, err := vault.New(context.Background(), vault.Config{Address: v.Addr, Auth: vault.Auth{Token: tok},
		Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	time.Sleep(6 * time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().Lookup(tok); err != nil {
		t.Fatalf("Errand's token lapsed although Run was renewing it: %v", err)
	}
}

func TestCheckPathRefusesVaultControlPaths(t *testing.T) {
	for _, p := range []string{"sys/policy/x", "auth/token/create", "identity/entity", "cubbyhole/x", "/database/creds/x",
		"database/../sys/x", "database/creds/*", "SYS/policy", ""} {
		if vault.CheckPath(p) == nil {
			t.Errorf("CheckPath(%q) accepted", p)
		}
	}
	if err := vault.CheckPath("database/creds/orders-readonly"); err != nil {
		t.Fatal(err)
	}
}
