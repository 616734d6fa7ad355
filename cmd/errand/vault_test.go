package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/issuer/vault"
)

// TestH01ServeChecksEveryVaultCapability: serve, wired to a real Vault,
// refuses to start with one line naming the path and the capability when
// Errand's token lacks one of README's policy (here list on
// auth/token/accessors, which only the reconciler uses), and starts with
// exactly README's policy, running the reconciler (its metric is served).
func TestH01ServeChecksEveryVaultCapability(t *testing.T) {
	v := testvault.Shared(t)
	cfg, _, _, _ := loadServeConfig(t)
	cfg.Actions = append(cfg.Actions, config.Action{Name: "db.orders.read", Class: "read", Risk: "low"})
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	cfg.Vault = &config.Vault{Address: v.Addr, Auth: config.VaultAuth{Method: "token", TokenFile: tokenFile},
		Roles:             []config.VaultRole{{Name: "task-ro", Action: "db.orders.read", Path: "database/creds/task-ro"}},
		ReconcileInterval: time.Second}
	useToken := func(tok string) {
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	lacking := strings.Replace(vault.Policy(""), `path "auth/token/accessors" { capabilities = ["list", "sudo"] }`,
		`path "auth/token/accessors" { capabilities = ["sudo"] }`, 1)
	if lacking == vault.Policy("") {
		t.Fatal("test bug: the policy was not changed")
	}
	tok, _ := v.Token(t, lacking)
	useToken(tok)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true, nil)
	if err == nil || !strings.Contains(err.Error(), `lacks "list" on auth/token/accessors`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("serve with a token lacking list on auth/token/accessors: %v", err)
	}

	useToken(v.ErrandToken(t))
	addr, _ := startServe(t, cfg, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if strings.Contains(string(body), `errand_vault_reconcile_runs_total{result="ok"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful reconciliation in /metrics:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
