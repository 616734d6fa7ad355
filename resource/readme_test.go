package resource_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/client"
	"github.com/errandhq/errand/internal/testing/errandtest"
	"github.com/errandhq/errand/resource"
)

// readmeServer is README's "For resource servers (Go)" snippet, between
// the README markers, verbatim (TestREADMEResourceSnippet holds README to
// it).
func readmeServer(ctx context.Context, errandURL, apiURL, tokenFile string) (http.Handler, error) {
	// README begin
	v, err := resource.New(resource.Config{
		Issuer:     errandURL, // Errand's public URL: the tokens' iss
		Audience:   apiURL,    // this API, as configured in Errand's audiences
		Credential: client.FileToken(tokenFile),
	})
	if err != nil {
		return nil, err
	}
	go v.Run(ctx) // follows the revocation feed, refreshes the JWKS

	mux := http.NewServeMux()
	mux.Handle("GET "+v.MetadataPath(), v.MetadataHandler()) // RFC 9728
	mux.Handle("POST /repos/acme/api/pulls", v.Require("github.pr.write", "acme/api")(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, _ := resource.FromContext(r.Context())
			fmt.Fprintf(w, "pull request opened for %s by %s\n", tok.Subject, tok.ClientID)
		})))
	mux.Handle("GET /repos/{owner}/{repo}", v.Middleware(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, _ := resource.FromContext(r.Context())
			repo := r.PathValue("owner") + "/" + r.PathValue("repo")
			if !tok.Allows("github.repo.read", repo) {
				v.WriteError(w, &resource.Error{Status: http.StatusForbidden,
					Code: "insufficient_scope", Scope: "github.repo.read:" + repo})
				return
			}
			fmt.Fprintf(w, "contents of %s\n", repo)
		})))
	// README end
	return mux, nil
}

// TestREADMEResourceServer runs README's snippet against a real Errand:
// the covered write passes, the uncovered read is refused, and a closed
// task's token is refused at once.
func TestREADMEResourceServer(t *testing.T) {
	e := errandtest.Start(t, errandtest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.Resource(t, errandtest.RS)), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := readmeServer(ctx, e.URL, errandtest.API, tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(h)
	defer api.Close()

	agent := client.New(e.URL, e.Agent(t, "bot"))
	task, _, err := agent.CreateTask(ctx, client.CreateTask{OnBehalfOf: "alice", Goal: "open a PR",
		Scopes: []string{"github.pr.write:acme/api", "github.repo.read:acme/docs"}, Audiences: []string{errandtest.API}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.New(e.URL, e.User(t, "alice", errandtest.Group)).Approve(ctx, task.ID, client.Seen(task)); err != nil {
		t.Fatal(err)
	}
	tok, _, err := agent.Mint(ctx, task.ID, client.Mint{Scopes: []string{"github.pr.write:acme/api", "github.repo.read:acme/docs"}, Audience: errandtest.API})
	if err != nil {
		t.Fatal(err)
	}
	send := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, api.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b) + res.Header.Get("WWW-Authenticate")
	}
	var code int
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) { // until Run has read the feed once
		if code, body = send("POST", "/repos/acme/api/pulls"); code != http.StatusServiceUnavailable {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != 200 || !strings.Contains(body, "opened for alice") {
		t.Fatalf("covered write: %d %s", code, body)
	}
	if code, body := send("GET", "/repos/acme/docs"); code != 200 {
		t.Fatalf("covered read: %d %s", code, body)
	}
	if code, body := send("GET", "/repos/acme/api"); code != 403 || !strings.Contains(body, "insufficient_scope") {
		t.Fatalf("uncovered read: %d %s", code, body)
	}
	res, err := http.Get(api.URL + "/.well-known/oauth-protected-resource")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("metadata: %v", err)
	}
	res.Body.Close()
	if _, _, err := agent.Close(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for send1 := 0; time.Since(start) < time.Second; send1++ {
		if code, _ := send("POST", "/repos/acme/api/pulls"); code == 401 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the closed task's token was accepted a second after the close")
}

// TestREADMEResourceSnippet: README shows readmeServer's code verbatim.
func TestREADMEResourceSnippet(t *testing.T) {
	if err := snippetMatches("../README.md", "## For resource servers (Go)", "readme_test.go"); err != nil {
		t.Fatal(err)
	}
}

// snippetMatches checks that the first ```go block under heading in md is
// the code between "// README begin" and "// README end" of src, with the
// indentation of its first line removed.
func snippetMatches(md, heading, src string) error {
	doc, err := os.ReadFile(md)
	if err != nil {
		return err
	}
	_, sec, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		return fmt.Errorf("README has no %q", heading)
	}
	_, block, ok := strings.Cut(sec, "```go\n")
	if !ok {
		return errors.New("no go block under " + heading)
	}
	block, _, _ = strings.Cut(block, "```")
	code, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	_, want, _ := strings.Cut(string(code), "// README begin\n")
	want, _, _ = strings.Cut(want, "// README end")
	lines := strings.Split(strings.TrimRight(want, "\t\n"), "\n")
	indent := lines[0][:len(lines[0])-len(strings.TrimLeft(lines[0], "\t"))]
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, indent)
	}
	if got, want := strings.TrimSpace(block), strings.TrimSpace(strings.Join(lines, "\n")); got != want {
		return fmt.Errorf("README's snippet under %q is not the tested code:\n--- README\n%s\n--- %s\n%s", heading, got, src, want)
	}
	return nil
}
