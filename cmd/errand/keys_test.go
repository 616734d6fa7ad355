package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/store/postgres"
)

func kidOfToken(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	_ = json.Unmarshal(raw, &h)
	return h.Kid
}

func jwksKids(t *testing.T, base string) string {
	t.Helper()
	m := callJSON(t, base, "GET", "/.well-known/jwks.json", "x", nil)
	var kids []string
	for _, k := range m["keys"].([]any) {
		kids = append(kids, k.(map[string]any)["kid"].(string))
	}
	return strings.Join(kids, ",")
}

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("errand %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestKeyRotationAcrossReplicas: errand keys rotate on a database two
// replicas serve; both pick the new key up without restart, tokens of the
// old key keep verifying until it is retired, and then on neither.
func TestKeyRotationAcrossReplicas(t *testing.T) {
	app.KeyReloadEvery = 50 * time.Millisecond
	t.Cleanup(func() { app.KeyReloadEvery = 10 * time.Second })
	cfg, agents, users, resources := loadServeConfig(t)
	path := writeConfig(t, cfg.DatabaseURL, agents, users, resources)
	a, b := twoReplicas(t, cfg)
	agent := agents.Token(t, "ci-bot", "errand", nil)
	user := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	rs := resources.Token(t, "gw", "errand", nil)
	id := callJSON(t, a, "POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "g",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})["id"].(string)
	callJSON(t, a, "POST", "/v1/tasks/"+id+"/approve", user, map[string]any{})
	mint := func(base string) string {
		return callJSON(t, base, "POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})["access_token"].(string)
	}
	active := func(base, tok string) bool {
		return callJSON(t, base, "POST", "/v1/introspect", rs, url.Values{"token": {tok}})["active"] == true
	}
	old := mint(a)
	oldKid := kidOfToken(t, old)
	before := jwksKids(t, a)
	if strings.Count(before, ",") != 1 {
		t.Fatalf("JWKS before the rotation: %s, want current and next", before)
	}

	// The next key was published at start, moments ago: a rotation waits
	// for every cached JWKS to have it, unless forced.
	if out, err := runCLIErr("keys", "rotate", "--config", path); err == nil || !strings.Contains(err.Error(), "published too recently") {
		t.Fatalf("a rotation to a key published moments ago: %v\n%s", err, out)
	}
	out := runCLI(t, "keys", "rotate", "--force", "--yes", "--config", path)
	if !strings.Contains(out, oldKid) || !strings.Contains(out, "previous") {
		t.Fatalf("keys rotate output:\n%s", out)
	}
	// Both replicas pick it up without restart.
	var fresh string
	deadline := time.Now().Add(5 * time.Second)
	for {
		fresh = mint(b)
		if kidOfToken(t, fresh) != oldKid && kidOfToken(t, mint(a)) != oldKid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a replica still signs with the rotated key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, base := range []string{a, b} {
		if kids := jwksKids(t, base); strings.Count(kids, ",") != 2 || !strings.Contains(kids, oldKid) {
			t.Fatalf("JWKS of %s after the rotation: %s, want next, current and previous", base, kids)
		}
		if !active(base, old) || !active(base, fresh) {
			t.Fatalf("%s: a token of the previous or current key is not active", base)
		}
	}

	list := runCLI(t, "keys", "list", "--config", path)
	for _, want := range []string{"next", "current", "previous"} {
		if !strings.Contains(list, want) {
			t.Fatalf("keys list lacks %s:\n%s", want, list)
		}
	}
	// "--": one key id in 64 begins with '-' (TestKeysRetireKidBeginningWithADash).
	runCLI(t, "keys", "retire", "--yes", "--config", path, "--", oldKid)
	deadline = time.Now().Add(5 * time.Second)
	for active(a, old) || active(b, old) {
		if time.Now().After(deadline) {
			t.Fatal("a retired key's token still verifies on a replica")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, base := range []string{a, b} {
		if strings.Contains(jwksKids(t, base), oldKid) {
			t.Fatalf("%s still serves the retired key", base)
		}
		if !active(base, fresh) {
			t.Fatalf("%s: the current key's token is not active", base)
		}
	}

	// Both changes are audited as the operator's.
	st, err := postgres.Open(context.Background(), postgres.Config{URL: cfg.DatabaseURL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := st.AuditEvents(context.Background(), broker.HistoryFilter{Type: broker.EventKeysChanged, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	operators := 0
	for _, e := range evs {
		if e.Actor.Kind == "operator" {
			operators++
		}
	}
	if operators != 2 {
		t.Fatalf("%d operator key events, want 2 (rotate, retire): %+v", operators, evs)
	}
}

// A key id is a base64url thumbprint and may begin with '-': given as a
// bare argument it reads as a flag, and the error says to put it after
// "--" instead of only "unknown shorthand flag".
func TestKeysRetireKidBeginningWithADash(t *testing.T) {
	const kid = "-G9NaS6fh14PUJ4s9Vx0bIHSpQjN5i2RZFOuQvkB2GU"
	_, err := runCLIErr("keys", "retire", kid, "--yes", "--config", "/nonexistent/errand.yaml")
	if err == nil || !strings.Contains(err.Error(), "errand keys retire [flags] -- "+kid) {
		t.Fatalf("err = %v; want it to say to pass the key id after --", err)
	}
	if code := exitCode(err); code != exitUsage {
		t.Fatalf("exit code %d, want %d (usage)", code, exitUsage)
	}
	// After "--" it is the key id: the command goes on to read the config.
	_, err = runCLIErr("keys", "retire", "--yes", "--config", "/nonexistent/errand.yaml", "--", kid)
	if err == nil || strings.Contains(err.Error(), "flag") || !strings.Contains(err.Error(), "/nonexistent/errand.yaml") {
		t.Fatalf("err = %v; want the config's error, not a flag's", err)
	}
}
