package vault_test

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/issuer/vault"
)

const testSecret = "0123456789abcdef0123456789abcdef"

var testRoles = []broker.SecretRole{{Name: "task-ro", Action: "db.orders.read", Path: "database/creds/task-ro"}}

// TestVaultPolicyIsREADMEs: the policy Errand's own Vault token needs is
// written in one place (vault.Policy); README's Vault section shows it
// word for word, and the Vault tests run Errand with exactly it.
func TestVaultPolicyIsREADMEs(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "## Vault dynamic secrets")
	if start < 0 {
		t.Fatal("README has no Vault section")
	}
	section := readme[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	m := regexp.MustCompile("(?s)Errand's own Vault identity needs.*?```hcl\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README's Vault section shows no hcl policy for Errand's own identity")
	}
	if m[1] != vault.Policy("") {
		t.Fatalf("README's policy differs from vault.Policy:\nREADME:\n%s\nvault.Policy:\n%s", m[1], vault.Policy(""))
	}
	if strings.Contains(m[1], `"*"`) || strings.Contains(m[1], `path "*"`) {
		t.Fatal("Errand's policy grants everything")
	}
}

// without returns Errand's policy with one capability of one path removed
// (and the path dropped once it has none left).
func without(path, capability string) string {
	var b strings.Builder
	for _, n := range vault.Needs("") {
		caps := n.Capabilities
		if n.Path == path {
			caps = slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == capability })
		}
		if len(caps) == 0 {
			continue
		}
		b.WriteString(`path "` + n.Path + `" { capabilities = ["` + strings.Join(caps, `", "`) + `"] }` + "\n")
	}
	return b.String()
}

// TestH01VaultStartRefusesAMissingCapability: for every capability of
// every path README lists, a token lacking just that one is refused at
// start, with one line naming the path and the capability; README's
// policy itself starts.
func TestH01VaultStartRefusesAMissingCapability(t *testing.T) {
	v := testvault.Shared(t)
	start := func(policy string) error {
		tok, _ := v.Token(t, policy)
		ctx, cancel := testvault.WithTimeout()
		defer cancel()
		_, err := vault.New(ctx, vault.Config{Address: v.Addr, Auth: vault.Auth{Token: tok}, Roles: testRoles, Secret: []byte(testSecret)})
		return err
	}
	if err := start(vault.Policy("")); err != nil {
		t.Fatalf("README's policy does not start: %v", err)
	}
	for _, n := range vault.Needs("") {
		for _, c := range n.Capabilities {
			err := start(without(n.Path, c))
			path := strings.Replace(n.Path, "*", "task-ro", 1)
			want := `lacks "` + c + `" on ` + path
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("without %q on %s: start gave %v, want one line with %s", c, n.Path, err, want)
			}
		}
	}
}

// TestH01VaultRevokeConfirmsOnlyInvalidAccessor: a revocation is
// confirmed only by Vault's own "invalid accessor"; a 403 (the policy lost
// revoke-accessor, or lookup-accessor) is a failure, and the token lives.
func TestH01VaultRevokeConfirmsOnlyInvalidAccessor(t *testing.T) {
	v := testvault.Shared(t)
	root := v.Root()
	tok, policy := v.Token(t, vault.Policy(""))
	ctx := context.Background()
	i, err := vault.New(ctx, vault.Config{Address: v.Addr, Auth: vault.Auth{Token: tok}, Roles: testRoles, Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	task, err := i.CreateTaskToken(ctx, "tsk_h01", "vti_h01", testRoles, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	item := broker.OutboxItem{Kind: broker.KindVaultToken, Ref: task.Accessor}
	alive := func() bool {
		_, err := root.Auth().Token().LookupAccessor(task.Accessor)
		return err == nil
	}

	if err := root.Sys().PutPolicy(policy, without("auth/token/revoke-accessor", "update")); err != nil {
		t.Fatal(err)
	}
	if err := i.Revoke(ctx, item); err == nil {
		t.Fatal("a 403 from revoke-accessor was taken for a confirmed revocation")
	}
	if !alive() {
		t.Fatal("test bug: the token is gone although Errand may not revoke it")
	}

	// Revoked but not confirmable: still not confirmed.
	if err := root.Sys().PutPolicy(policy, without("auth/token/lookup-accessor", "update")); err != nil {
		t.Fatal(err)
	}
	if err := i.Revoke(ctx, item); err == nil {
		t.Fatal("a 403 from lookup-accessor was taken for a confirmation")
	}

	if err := root.Sys().PutPolicy(policy, vault.Policy("")); err != nil {
		t.Fatal(err)
	}
	if err := i.Revoke(ctx, item); err != nil {
		t.Fatalf("revocation with README's policy: %v", err)
	}
	if alive() {
		t.Fatal("the task token survived a confirmed revocation")
	}
	if err := i.Revoke(ctx, item); err != nil {
		t.Fatalf("a second revocation (idempotent): %v", err)
	}
}
