package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
)

// A policy that does not load stops start-up, naming its file and line,
// in either engine.
func TestServeRefusesABrokenPolicy(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	for _, c := range []struct{ engine, file, text, want string }{
		{"cedar", "a.cedar", "permit (principal, action, resource);\n\nforbid (principal, action resource);\n", "a.cedar:3:"},
		{"opa", "a.rego", "package errand\n\nallow contains \"a\"\n\ndeny contains \"x\" if input.context.enviroment == \"prod\"\n", "a.rego:5:"},
		{"opa", "a.rego", "package errand\n\nallow contains \"a\"\n\ndeny contains \"typo\" if input.action == \"github.pr.writ\"\n", `a.rego:5: compares input.action with the action "github.pr.writ"`},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		path := writeConfig(t, "postgres://unused", testoidc.New(t), testoidc.New(t), testoidc.New(t))
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.WriteString("policy_engine: " + c.engine + "\npolicies: [\"" + dir + "/*" + filepath.Ext(c.file) + "\"]\n")
		_ = f.Close()
		if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: a broken policy loaded: %v", c.engine, err)
		}
	}
}

// reloadTexts are the policies of TestServeReloadsPoliciesOnHangup in one
// engine: a first set that forbids the shell tool, a broken file, and a
// second set that forbids git instead.
type reloadTexts struct{ engine, ext, first, broken, second string }

var reloadEngines = []reloadTexts{
	{"cedar", ".cedar", `@id("allow") permit (principal, action, resource);
@id("no-shell") forbid (principal, action, resource) when { context.tool == "shell" };`, "forbid (principal,", `@id("allow") permit (principal, action, resource);
@id("no-git") forbid (principal, action, resource) when { context.tool == "git" };`},
	{"opa", ".rego", "package errand\n\nallow contains \"allow\"\n\ndeny contains \"no-shell\" if input.context.tool == \"shell\"\n",
		"package errand\n\ndeny contains \"x\" if {", "package errand\n\nallow contains \"allow\"\n\ndeny contains \"no-git\" if input.context.tool == \"git\"\n"},
}

// TestServeReloadsPoliciesOnHangup: SIGHUP reads the policy files again
// (Rego is prepared again); a set that does not load is refused and the
// running one stays in force.
func TestServeReloadsPoliciesOnHangup(t *testing.T) {
	for _, p := range reloadEngines {
		t.Run(p.engine, func(t *testing.T) { serveReloadsPoliciesOnHangup(t, p) })
	}
}

func serveReloadsPoliciesOnHangup(t *testing.T, p reloadTexts) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("base"+p.ext, p.first)
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	path := writeConfig(t, testpg.NewDatabase(t), agents, users, resources)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("policy_engine: " + p.engine + "\npolicies: [\"*" + p.ext + "\"]\n")
	_ = f.Close()
	// Relative patterns are read from the config file's directory.
	if err := os.Rename(path, filepath.Join(dir, "errand.yaml")); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, "errand.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	addr, _ := startServe(t, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	base := "http://" + addr
	agent := agents.Token(t, "ci-bot", "errand", nil)
	create := func(tool string) (int, string) {
		raw, _ := json.Marshal(map[string]any{"on_behalf_of": "alice", "goal": "g", "tool": tool,
			"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})
		req, _ := http.NewRequest("POST", base+"/v1/tasks", bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+agent)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var p struct{ Code string }
		_ = json.NewDecoder(res.Body).Decode(&p)
		return res.StatusCode, p.Code
	}
	hangup := func(want string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the logs:\n%s", want, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if s, code := create("shell"); s != 403 || code != "policy_denied" {
		t.Fatalf("shell: %d %s", s, code)
	}
	if s, _ := create("git"); s != 201 {
		t.Fatalf("git: %d", s)
	}

	write("broken"+p.ext, p.broken)
	hangup("policy reload refused")
	if !strings.Contains(logs.String(), "broken"+p.ext+":") {
		t.Fatalf("the refusal does not name the file and line:\n%s", logs.String())
	}
	if s, code := create("shell"); s != 403 || code != "policy_denied" {
		t.Fatalf("after a broken reload: %d %s", s, code)
	}
	if s, _ := create("git"); s != 201 {
		t.Fatalf("after a broken reload, git: %d", s)
	}

	if err := os.Remove(filepath.Join(dir, "broken"+p.ext)); err != nil {
		t.Fatal(err)
	}
	write("base"+p.ext, p.second)
	hangup("policies reloaded")
	if s, _ := create("shell"); s != 201 {
		t.Fatalf("after the reload, shell: %d", s)
	}
	if s, code := create("git"); s != 403 || code != "policy_denied" {
		t.Fatalf("after the reload, git: %d %s", s, code)
	}
}
