package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/client"
	"github.com/errandhq/errand/internal/testing/errandtest"
)

// readmeAgent is README's "For agents (Go client)" snippet, between the
// README markers, verbatim (TestREADMEAgentSnippet holds README to it).
func readmeAgent(ctx context.Context, errandURL, apiURL, tokenFile string, call func(token string) error) error {
	// README begin
	c := client.NewWithSource(errandURL, client.FileToken(tokenFile))
	task, _, err := c.CreateTask(ctx, client.CreateTask{
		OnBehalfOf: "alice",
		Goal:       "fix the flaky test in acme/api",
		Scopes:     []string{"github.repo.read:acme/api", "github.pr.write:acme/api"},
		Audiences:  []string{apiURL},
		TTLSeconds: 3600,
	})
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx), task.ID) // revokes everything minted for it

	task, err = c.WaitForApproval(ctx, task.ID) // alice approves (web, CLI or API)
	if err != nil {
		return err // client.ErrNotApproved when she denies
	}
	tok, _, err := c.Mint(ctx, task.ID, client.Mint{ // retried safely: Idempotency-Key
		Scopes:   []string{"github.pr.write:acme/api"},
		Audience: apiURL,
	})
	if err != nil {
		return err
	}
	return call(tok.AccessToken) // Authorization: Bearer <token>, valid for minutes
	// README end
}

// TestREADMEAgent runs README's snippet against a real Errand, with alice
// approving through the API, and checks the token it used is revoked once
// the snippet returns.
func TestREADMEAgent(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.Agent(t, "bot")), 0o600); err != nil {
		t.Fatal(err)
	}
	alice := client.New(e.URL, e.User(t, "alice", errandtest.Group))
	go func() {
		for ctx.Err() == nil {
			ts, _, _ := alice.ListTasks(ctx, "pending")
			for _, tk := range ts {
				_, _, _ = alice.Approve(ctx, tk.ID, client.Seen(tk))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var used string
	if err := readmeAgent(ctx, e.URL, errandtest.API, tokenFile, func(token string) error {
		used = token
		in, _, err := client.New(e.URL, e.Resource(t, errandtest.RS)).Introspect(ctx, token)
		if err != nil || in["active"] != true || in["scope"] != "github.pr.write:acme/api" {
			return fmt.Errorf("the minted token introspects %v (%v)", in, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	in, _, err := client.New(e.URL, e.Resource(t, errandtest.RS)).Introspect(ctx, used)
	if err != nil || in["active"] != false {
		t.Fatalf("after the snippet closed its task the token introspects %v (%v)", in, err)
	}
}

// TestREADMEAgentSnippet: README shows readmeAgent's code verbatim.
func TestREADMEAgentSnippet(t *testing.T) {
	doc, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), "\n## For agents (Go client)\n")
	if !ok {
		t.Fatal("README has no agents section")
	}
	_, block, ok := strings.Cut(sec, "```go\n")
	if !ok {
		t.Fatal(errors.New("no go block"))
	}
	block, _, _ = strings.Cut(block, "```")
	code, _ := os.ReadFile("readme_test.go")
	_, want, _ := strings.Cut(string(code), "// README begin\n")
	want, _, _ = strings.Cut(want, "// README end")
	lines := strings.Split(strings.TrimRight(want, "\t\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	if got, w := strings.TrimSpace(block), strings.TrimSpace(strings.Join(lines, "\n")); got != w {
		t.Fatalf("README's agent snippet is not the tested code:\n--- README\n%s\n--- readme_test.go\n%s", got, w)
	}
}
