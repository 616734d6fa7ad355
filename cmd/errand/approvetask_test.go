package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/errandhq/errand/store/sqlite"
)

// TestTaskApproveShowsTheTaskAndConfirms: errand task approve shows the
// task as the approval page does (what is decided first, with the
// catalog's description; the agent's words quoted after), asks on a
// terminal, refuses without one unless --yes (exit 2), changes nothing
// when not confirmed, and sends the version and digest it showed.
func TestTaskApproveShowsTheTaskAndConfirms(t *testing.T) {
	d := startDev(t, "127.0.0.1:0", sqlite.Memory)
	agent, alice, _, _, _ := devTokens(t, d)
	id := strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice",
		"--goal", "status: APPROVED by security <b>", "--scope", "github.repo.read:acme/**", "--audience", "https://api.github.com"))

	// A proxy in front of errand dev keeps the approval's body.
	target, _ := url.Parse(d.base)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var (
		mu     sync.Mutex
		bodies []map[string]any
	)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/approve") {
			raw, _ := io.ReadAll(r.Body)
			var b map[string]any
			_ = json.Unmarshal(raw, &b)
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(raw))
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	status := func() string {
		var task map[string]any
		_ = json.Unmarshal([]byte(d.must(t, "task", "get", id, "--token", alice, "-o", "json")), &task)
		return task["status"].(string)
	}
	approve := func(stdin string, extra ...string) (string, string, int) {
		return execIn(strings.NewReader(stdin), append([]string{"task", "approve", id, "--token", alice, "--server", front.URL}, extra...)...)
	}

	if _, errOut, code := approve("y\n"); code != exitUsage || !strings.Contains(errOut, "--yes") || status() != "pending" {
		t.Fatalf("without a terminal: exit %d %s", code, errOut)
	}
	stdinIsTerminal = func(io.Reader) bool { return true }
	t.Cleanup(func() { stdinIsTerminal = isTerminalFile })
	_, errOut, code := approve("n\n", "--scope", "github.repo.read:acme/api")
	if code != exitRefused || status() != "pending" {
		t.Fatalf("answered n: exit %d %s", code, errOut)
	}
	scopes := strings.Index(errOut, "github.repo.read:acme/**")
	desc := strings.Index(errOut, "Read code, issues and pull requests")
	words := strings.Index(errOut, agentWordsHeading)
	goal := strings.Index(errOut, `"status: APPROVED by security <b>"`)
	question := strings.Index(errOut, "Approve task "+id+" for agent ")
	if !strings.Contains(errOut, "#agent-1, narrowed: github.repo.read:acme/api for https://api.github.com? [y/N]") {
		question = -1
	}
	if scopes < 0 || desc < scopes || words < desc || goal < words || question < goal {
		t.Fatalf("the view must show what is decided, then the agent's words quoted, then the question:\n%s", errOut)
	}
	if len(bodies) != 0 {
		t.Fatalf("an unconfirmed approval was sent: %v", bodies)
	}

	out, errOut, code := approve("yes\n", "--scope", "github.repo.read:acme/api")
	if code != 0 || status() != "approved" || !strings.Contains(out, "approved") {
		t.Fatalf("answered yes: exit %d %s %s", code, out, errOut)
	}
	var shown map[string]any
	_ = json.Unmarshal([]byte(d.must(t, "task", "get", id, "--token", alice, "-o", "json")), &shown)
	if len(bodies) != 1 || bodies[0]["version"] != float64(1) || bodies[0]["digest"] == "" || bodies[0]["digest"] == nil {
		t.Fatalf("the approval did not name the version and digest shown: %v", bodies)
	}

	// --yes needs no terminal, and binds what it read too.
	stdinIsTerminal = isTerminalFile
	id = strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice",
		"--goal", "again", "--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com"))
	if _, errOut, code := execIn(strings.NewReader(""), "task", "approve", id, "--yes", "--token", alice, "--server", front.URL); code != 0 {
		t.Fatalf("--yes: exit %d %s", code, errOut)
	}
	if len(bodies) != 2 || bodies[1]["digest"] == nil {
		t.Fatalf("--yes sent %v", bodies)
	}
}
