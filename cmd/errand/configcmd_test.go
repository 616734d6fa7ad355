package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandhq/errand/internal/testing/testoidc"
)

func runCLIErr(args ...string) (string, error) {
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestConfigCheck: config check prints the effective config with every
// default filled in and the secrets masked, and what it prints checks
// again, to the same text.
func TestConfigCheck(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("s", 40))
	path := writeConfig(t, "postgres://errand:db-pass-canary@db.example:5432/errand?sslmode=require",
		testoidc.New(t), testoidc.New(t), testoidc.New(t))
	out, err := runCLIErr("config", "check", "--config", path)
	if err != nil {
		t.Fatalf("a valid config: %v\n%s", err, out)
	}
	for _, want := range []string{"is valid", "system_secret: ${ERRAND_SYSTEM_SECRET}", "errand:xxxxx@db.example", "token_ttl_max: 5m0s", "rotate_every: 24h",
		// The defaults the server applies, written out.
		"algorithms:\n      - RS256\n      - ES256", "max_token_lifetime: 24h0m0s", "pending_tasks_per_agent: 20", "principal_rps: 50",
		"address_rps: 200", "credentials_per_task: 0", "step_up_ttl: 15m0s", "streams_per_principal: 4", "overlap: 1h0m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "db-pass-canary") || strings.Contains(out, strings.Repeat("s", 40)) {
		t.Fatalf("a secret is printed:\n%s", out)
	}
	// The printed config is a valid config, and a fixed point.
	printed := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(printed, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := runCLIErr("config", "check", "--config", printed)
	if err != nil {
		t.Fatalf("config check's own output does not check: %v\n%s", err, again)
	}
	if _, body, _ := strings.Cut(again, "\n"); !strings.HasSuffix(out, body) {
		t.Fatalf("the printed config changes when checked again:\n%s\n---\n%s", out, again)
	}
	// Keyword DSNs and passwords holding '@' are masked too.
	for _, dsn := range []string{"host=db.example user=errand password=db-pass-canary dbname=errand",
		"postgres://errand:db-pass@canary@db.example/errand"} {
		t.Setenv("ERRAND_DATABASE_URL", dsn)
		out, err := runCLIErr("config", "check", "--config", path)
		if err != nil || strings.Contains(out, "canary") {
			t.Fatalf("%s: %v\n%s", dsn, err, out)
		}
	}
	t.Setenv("ERRAND_DATABASE_URL", "")
	if out, err := runCLIErr("config", "check", "-q", "--config", path); err != nil || out != "" {
		t.Fatalf("quiet: %v %q", err, out)
	}

	// Several problems: all of them, each naming its key.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(`public_url: ftp://x
database_url: postgres://x/y
system_secret: short
signing_alg: RS256
audit_anchor_every: sometimes
issuers: [{url: "https://idp.example", audience: errand, kind: agent}]
limits: {token_ttl_max: 10h, task_ttl_max: 1h}
keys: {rotate_every: 1m}
tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ERRAND_SYSTEM_SECRET", "")
	out, err = runCLIErr("config", "check", "--config", bad)
	if err == nil {
		t.Fatalf("a bad config passed:\n%s", out)
	}
	for _, key := range []string{"public_url", "system_secret", "signing_alg", "audit_anchor_every", "limits.token_ttl_max", "keys.rotate_every", "tls.cert_file"} {
		if !strings.Contains(out, "config: "+key) {
			t.Errorf("no problem reported for %s:\n%s", key, out)
		}
	}
}
