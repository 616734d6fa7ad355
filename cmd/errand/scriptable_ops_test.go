package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testvault"
)

// execIn is execCLI with stdin.
func execIn(stdin io.Reader, args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	root := newRoot()
	root.SetIn(stdin)
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString("errand: " + err.Error())
	}
	return out.String(), errOut.String(), exitCode(err)
}

// TestDestructiveKeysCommandsConfirm: keys retire and keys rotate --force
// ask on a terminal, refuse without one unless --yes, and change nothing
// when not confirmed.
func TestDestructiveKeysCommandsConfirm(t *testing.T) {
	cfg, agents, users, resources := loadServeConfig(t)
	path := writeConfig(t, cfg.DatabaseURL, agents, users, resources)
	startServe(t, cfg, nil)
	state := func(kid string) string {
		out, errOut, code := execIn(strings.NewReader(""), "keys", "list", "--config", path, "-o", "json")
		if code != 0 {
			t.Fatalf("keys list: %s", errOut)
		}
		var doc struct {
			Keys []struct{ KID, State string }
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("keys list -o json: %v\n%s", err, out)
		}
		for _, k := range doc.Keys {
			if k.KID == kid || kid == "" && k.State == "next" {
				return k.KID + " " + k.State
			}
		}
		t.Fatalf("no key %q in\n%s", kid, out)
		return ""
	}
	kid := strings.Fields(state(""))[0]
	if table, _, _ := execIn(nil, "keys", "list", "--config", path); !strings.Contains(table, "KID") || !strings.Contains(table, kid) {
		t.Fatalf("keys list:\n%s", table)
	}

	if _, errOut, code := execIn(strings.NewReader("y\n"), "keys", "retire", kid, "--config", path); code != exitUsage ||
		!strings.Contains(errOut, "pass --yes") {
		t.Fatalf("retire without a terminal: exit %d %s", code, errOut)
	}
	if _, errOut, code := execIn(strings.NewReader(""), "keys", "rotate", "--force", "--config", path); code != exitUsage {
		t.Fatalf("rotate --force without a terminal: exit %d %s", code, errOut)
	}
	if got := state(kid); got != kid+" next" {
		t.Fatalf("an unconfirmed retire changed the key: %s", got)
	}

	stdinIsTerminal = func(io.Reader) bool { return true }
	t.Cleanup(func() { stdinIsTerminal = isTerminalFile })
	if _, errOut, code := execIn(strings.NewReader("n\n"), "keys", "retire", kid, "--config", path); code != exitRefused ||
		!strings.Contains(errOut, "Retire key "+kid+" now?") || !strings.Contains(errOut, "nothing changed") {
		t.Fatalf("retire answered n: exit %d %s", code, errOut)
	}
	if got := state(kid); got != kid+" next" {
		t.Fatalf("a retire answered n changed the key: %s", got)
	}
	if _, errOut, code := execIn(strings.NewReader("yes\n"), "keys", "retire", kid, "--config", path); code != 0 {
		t.Fatalf("retire answered yes: exit %d %s", code, errOut)
	}
	if got := state(kid); got != kid+" retired" {
		t.Fatalf("after a confirmed retire: %s", got)
	}
	stdinIsTerminal = isTerminalFile
	if _, errOut, code := execIn(strings.NewReader(""), "keys", "rotate", "--force", "--yes", "--config", path); code != 0 {
		t.Fatalf("rotate --force --yes: exit %d %s", code, errOut)
	}
}

// TestAuditVerifyAndExportWithTheDatabaseURLAlone: an auditor with a
// login granted only the auditor role, no errand.yaml and no
// system_secret verifies and exports the chain.
func TestAuditVerifyAndExportWithTheDatabaseURLAlone(t *testing.T) {
	u, cfgPath := auditDB(t, 7)
	if out, err := runErrand(t, "db", "roles", "--config", cfgPath, "--app-role", "cli_app", "--auditor-role", "cli_auditor"); err != nil {
		t.Fatalf("db roles: %v\n%s", err, out)
	}
	auditor := loginRole(t, u, "cli_auditor")
	t.Cleanup(func() { dropRole(t, u, "cli_app") })
	t.Chdir(t.TempDir()) // no errand.yaml here
	t.Setenv("ERRAND_SYSTEM_SECRET", "")

	out, errOut, code := execIn(strings.NewReader(""), "audit", "verify", "--database-url", auditor)
	if code != 0 || !strings.Contains(out, "audit chain intact: 7 events") {
		t.Fatalf("verify: exit %d %s %s", code, out, errOut)
	}
	t.Setenv("ERRAND_DATABASE_URL", auditor)
	out, errOut, code = execIn(strings.NewReader(""), "audit", "export")
	if code != 0 || strings.Count(out, "\n") != 7 || !strings.Contains(out, `"hash"`) {
		t.Fatalf("export: exit %d %s\n%s", code, errOut, out)
	}
	if _, errOut, code := execIn(strings.NewReader(""), "audit", "verify", "--config", cfgPath, "--database-url", auditor); code != exitUsage {
		t.Fatalf("--config with --database-url: exit %d %s", code, errOut)
	}
	t.Setenv("ERRAND_DATABASE_URL", "")
	if _, errOut, code := execIn(strings.NewReader(""), "audit", "verify"); code == 0 || !strings.Contains(errOut, "errand.yaml") {
		t.Fatalf("without --database-url it reads errand.yaml: exit %d %s", code, errOut)
	}
}

// TestCLIReachesAMutualTLSServer: --cacert, --cert and --key (or
// ERRAND_CACERT, ERRAND_CERT, ERRAND_KEY) reach serve behind mutual TLS;
// without a client certificate the handshake fails (exit 1).
func TestCLIReachesAMutualTLSServer(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	ca, caKey := selfSigned(t, p("ca.pem"), p("ca-key.pem"), 20, true, nil, nil)
	selfSigned(t, p("cert.pem"), p("key.pem"), 21, false, ca, caKey)
	selfSigned(t, p("client.pem"), p("client-key.pem"), 22, false, ca, caKey)
	cfg, _, users, _ := loadServeConfig(t)
	cfg.TLS = &config.TLS{CertFile: p("cert.pem"), KeyFile: p("key.pem"), ClientCAFile: p("ca.pem")}
	addr, _ := startServe(t, cfg, nil)
	alice := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	base := []string{"task", "list", "--server", "https://" + addr, "--token", alice}

	if out, errOut, code := execIn(nil, append(base, "--cacert", p("ca.pem"), "--cert", p("client.pem"), "--key", p("client-key.pem"))...); code != 0 ||
		!strings.Contains(out, "ID") {
		t.Fatalf("with a client certificate: exit %d %s", code, errOut)
	}
	if _, errOut, code := execIn(nil, append(base, "--cacert", p("ca.pem"))...); code != exitFailure || !strings.Contains(errOut, "cannot reach") {
		t.Fatalf("without a client certificate: exit %d %s", code, errOut)
	}
	if _, errOut, code := execIn(nil, append(base, "--cacert", p("ca.pem"), "--cert", p("client.pem"))...); code != exitUsage {
		t.Fatalf("--cert without --key: exit %d %s", code, errOut)
	}
	if _, errOut, code := execIn(nil, append(base, "--cacert", p("nope.pem"))...); code != exitUsage {
		t.Fatalf("a missing --cacert: exit %d %s", code, errOut)
	}
	t.Setenv("ERRAND_CACERT", p("ca.pem"))
	t.Setenv("ERRAND_CERT", p("client.pem"))
	t.Setenv("ERRAND_KEY", p("client-key.pem"))
	if _, errOut, code := execIn(nil, base...); code != 0 {
		t.Fatalf("with ERRAND_CACERT, ERRAND_CERT and ERRAND_KEY: exit %d %s", code, errOut)
	}
}

// TestEveryCommandHasAnExample walks the command tree.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.Hidden && c.Name() != "help" && c.Name() != "completion" && c.Parent() != nil && c.Parent().Name() != "completion" &&
			strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot())
}

// TestCompletion: task and approval ids come from the server when a token
// is set, and nothing (quietly) comes without one or without a server;
// enum flags complete their values.
func TestCompletion(t *testing.T) {
	d, _, alice, _, task, mint := stepUpDev(t)
	_, errLine := d.cli(t, mint...)
	apr := regexp.MustCompile(`apr_\w+`).FindString(errLine)

	complete := func(args ...string) string {
		// The word to complete comes last: --server goes before.
		line := append([]string{cobra.ShellCompRequestCmd, args[0], "--server", d.base}, args[1:]...)
		out, errOut, code := execCLI(context.Background(), line...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d %s", args, code, errOut)
		}
		return out
	}
	out := complete("task", "get", "--token", alice, "")
	if !strings.Contains(out, task+"\tapproved \"open a PR \\\"now\\\"\"") {
		t.Fatalf("task ids:\n%s", out)
	}
	if out := complete("approval", "approve", "--token", alice, ""); !strings.Contains(out, apr+"\tpending") {
		t.Fatalf("approval ids:\n%s", out)
	}
	if out := complete("task", "get", "--token", alice, "apr_"); strings.Contains(out, "tsk_") {
		t.Fatalf("ids not matching the prefix:\n%s", out)
	}
	if out := complete("task", "close", "--token", "", ""); strings.Contains(out, "tsk_") || !strings.Contains(out, ":4") {
		t.Fatalf("without a token:\n%s", out)
	}
	out, _, code := execCLI(context.Background(), cobra.ShellCompRequestCmd, "task", "get", "--token", alice, "--server", "http://127.0.0.1:1", "")
	if code != 0 || strings.Contains(out, "tsk_") {
		t.Fatalf("without a server: exit %d\n%s", code, out)
	}
	for _, c := range []struct{ args, want []string }{
		{[]string{"task", "list", "--status", ""}, taskStatuses},
		{[]string{"approval", "list", "--status", ""}, approvalStatuses},
		{[]string{"task", "list", "-o", ""}, outputFormats},
		{[]string{"audit", "export", "--format", ""}, []string{"jsonl", "csv"}},
		{[]string{"dev", "token", "--kind", ""}, []string{"agent", "user", "resource"}},
	} {
		out := complete(c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w+"\n") {
				t.Errorf("%v: lacks %s:\n%s", c.args, w, out)
			}
		}
	}
}

func dropRole(t *testing.T, u, role string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close(context.Background())
	conn.Exec(context.Background(), "DROP OWNED BY "+role)
	conn.Exec(context.Background(), "DROP ROLE "+role)
}

// TestSecretGetIssuesAVaultSecret: errand secret get hands the task's
// agent a Vault dynamic secret (its data and lease, -o json for scripts)
// through serve wired to a real Vault; another agent is refused.
func TestSecretGetIssuesAVaultSecret(t *testing.T) {
	v := testvault.Shared(t)
	cfg, agents, users, _ := loadServeConfig(t)
	cfg.Actions = append(cfg.Actions, config.Action{Name: "db.orders.read", Class: "read", Risk: "low"})
	cfg.Grants = append(cfg.Grants, config.Grant{Group: "engineers", Scopes: []string{"db.orders.read:database/creds/**"}})
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(tokenFile, []byte(v.ErrandToken(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Vault = &config.Vault{Address: v.Addr, Auth: config.VaultAuth{Method: "token", TokenFile: tokenFile},
		Roles: []config.VaultRole{{Name: "task-ro", Action: "db.orders.read", Path: "database/creds/task-ro"}}}
	addr, _ := startServe(t, cfg, nil)
	server := "http://" + addr
	agent := agents.Token(t, "ci-bot", "errand", nil)
	alice := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	run := func(args ...string) (string, string, int) {
		return execCLI(context.Background(), append(args, "--server", server)...)
	}
	task, errOut, code := run("task", "create", "-q", "--token", agent, "--on-behalf-of", "alice", "--goal", "read orders",
		"--scope", "db.orders.read:database/creds/task-ro", "--audience", "https://api.github.com")
	task = strings.TrimSpace(task)
	if code != 0 {
		t.Fatalf("task create: %s", errOut)
	}
	if _, errOut, code := run("task", "approve", "--yes", task, "--token", alice); code != 0 {
		t.Fatalf("approve: %s", errOut)
	}

	out, errOut, code := run("secret", "get", task, "--role", "task-ro", "--token", agent)
	if code != 0 || !regexp.MustCompile(`lease_id\s+database/creds/task-ro/`).MatchString(out) ||
		!regexp.MustCompile(`data\.username\s+v-`).MatchString(out) || !strings.Contains(out, "data.password") {
		t.Fatalf("secret get: exit %d %s\n%s", code, errOut, out)
	}
	out, errOut, code = run("secret", "get", task, "--role", "task-ro", "--token", agent, "-o", "json")
	var sec struct {
		LeaseID string            `json:"lease_id"`
		Data    map[string]string `json:"data"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &sec) != nil || sec.Data["password"] == "" || !strings.HasPrefix(sec.LeaseID, "database/creds/task-ro/") {
		t.Fatalf("secret get -o json: exit %d %s\n%s", code, errOut, out)
	}
	other := agents.Token(t, "other-bot", "errand", nil)
	if _, errOut, code := run("secret", "get", task, "--role", "task-ro", "--token", other); code == 0 || code == exitUsage || code == exitFailure {
		t.Fatalf("another agent's secret get: exit %d %s", code, errOut)
	}
	if _, errOut, code := run("secret", "get", task, "--token", agent); code != exitUsage {
		t.Fatalf("without --role: exit %d %s", code, errOut)
	}
}
