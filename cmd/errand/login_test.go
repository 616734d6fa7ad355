package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/devidp"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/signin"
)

// useBrowser makes errand login's "browser" sign in with drive, and
// keeps logins in a fresh config directory.
func useBrowser(t *testing.T, drive func(*http.Client, string) error) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	prev := openBrowser
	t.Cleanup(func() { openBrowser = prev })
	openBrowser = func(u string) error {
		jar, _ := cookiejar.New(nil)
		if err := drive(&http.Client{Jar: jar, Timeout: 10 * time.Second}, u); err != nil {
			t.Errorf("browser: %v", err)
		}
		return nil
	}
}

// pickDev answers the dev provider's picker as sub: the provider
// redirects to errand login's loopback address, which the client follows.
func pickDev(sub, groups string) func(*http.Client, string) error {
	return func(c *http.Client, u string) error {
		authz, err := url.Parse(u)
		if err != nil {
			return err
		}
		res, err := c.Get(u)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("picker: %d", res.StatusCode)
		}
		form := authz.Query()
		form.Set("sub", sub)
		form.Set("groups", groups)
		res, err = c.PostForm(authz.Scheme+"://"+authz.Host+authz.Path, form)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), "Signed in") {
			return fmt.Errorf("loopback answer: %d %s", res.StatusCode, body)
		}
		return nil
	}
}

// loginFile is the one file errand login keeps.
func loginFile(t *testing.T) (string, cachedLogin) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "errand", "logins", "*.json"))
	if len(files) != 1 {
		t.Fatalf("login files: %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var c cachedLogin
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return files[0], c
}

// TestLoginDevProvider: errand login against errand dev's provider (the
// loopback redirect with PKCE), the commands using the kept token,
// refreshed when it has expired, --token-file, and errand logout.
func TestLoginDevProvider(t *testing.T) {
	useBrowser(t, pickDev("alice", "eng"))
	d := startDev(t, "127.0.0.1:0", filepath.Join(t.TempDir(), "dev.db"))
	if _, errLine := d.cli(t, "task", "list"); !strings.Contains(errLine, "invalid_token") {
		t.Fatalf("before login: %q", errLine)
	}
	out := d.must(t, "login")
	if !strings.Contains(out, "Signed in to "+d.base+" as "+d.base+"/dev/idp/user#alice") {
		t.Fatalf("login said %q", out)
	}
	path, c := loginFile(t)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("login file mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Dir(path)); fi.Mode().Perm() != 0o700 {
		t.Fatalf("login directory mode %v", fi.Mode())
	}
	if c.RefreshToken == "" || c.IDToken == "" || c.Server != d.base {
		t.Fatalf("kept %+v", c)
	}
	d.must(t, "task", "list", "-o", "json")

	// Expired: the next command refreshes it first.
	c.Expiry = time.Now().Add(-time.Minute)
	if err := writeLogin(&c); err != nil {
		t.Fatal(err)
	}
	d.must(t, "task", "list", "-o", "json")
	_, c2 := loginFile(t)
	if c2.RefreshToken == c.RefreshToken || !c2.Expiry.After(time.Now()) {
		t.Fatalf("not refreshed: %+v", c2)
	}
	// Commands side by side after expiry: one refreshes (the refresh token
	// works once), the others wait and use the new token.
	c2.Expiry = time.Now().Add(-time.Minute)
	if err := writeLogin(&c2); err != nil {
		t.Fatal(err)
	}
	errs := make(chan string, 4)
	for i := 0; i < 4; i++ {
		go func() { _, e := d.cli(t, "task", "list", "-o", "json"); errs <- e }()
	}
	for i := 0; i < 4; i++ {
		if e := <-errs; e != "" {
			t.Fatalf("a command beside others: %s", e)
		}
	}
	_, c2 = loginFile(t)
	// The refresh token rotated: the old one is dead at the provider.
	c2.Expiry, c2.RefreshToken = time.Now().Add(-time.Minute), c.RefreshToken
	if err := writeLogin(&c2); err != nil {
		t.Fatal(err)
	}
	if _, errLine := d.cli(t, "task", "list"); !strings.Contains(errLine, "401 invalid_token") || !strings.Contains(errLine, "run errand login") {
		t.Fatalf("an old refresh token: %q", errLine)
	}
	if code := execute(context.Background(), []string{"task", "list", "--server", d.base}, io.Discard, io.Discard); code != exitAuth {
		t.Fatalf("exit %d, want %d", code, exitAuth)
	}

	out = d.must(t, "logout")
	if !strings.Contains(out, "Signed out of "+d.base) {
		t.Fatalf("logout said %q", out)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("login file after logout: %v", err)
	}
	if _, errLine := d.cli(t, "task", "list"); !strings.Contains(errLine, "invalid_token") {
		t.Fatalf("after logout: %q", errLine)
	}
	// --token-file and ERRAND_TOKEN_FILE, for scripts.
	tok := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "user", "--sub", "bob", "--group", "eng"))
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.must(t, "task", "list", "--token-file", f)
	t.Setenv("ERRAND_TOKEN_FILE", f)
	d.must(t, "task", "list")
}

// TestLoginZitadel: errand login against an OpenID Provider built from
// zitadel/oidc's op package and example storage, with its own login form,
// then a command with the kept token on an errand serve that trusts it.
func TestLoginZitadel(t *testing.T) {
	srv, set := lateHandler(t)
	storage.RegisterClients(storage.NativeClient("errand", "http://127.0.0.1/callback"))
	set(exampleop.SetupServer(srv, storage.NewStorage(storage.NewUserStore(srv)), nil, false))
	useBrowser(t, func(c *http.Client, u string) error {
		res, err := c.Get(u)
		if err != nil {
			return err
		}
		res.Body.Close()
		id := res.Request.URL.Query().Get("authRequestID")
		if id == "" {
			return fmt.Errorf("no login form at %s", res.Request.URL)
		}
		h, _ := url.Parse(srv)
		res, err = c.PostForm(srv+"/login/username", url.Values{"id": {id}, "username": {"test-user@" + h.Hostname()}, "password": {"verysecure"}})
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), "Signed in") {
			return fmt.Errorf("loopback answer: %d %s", res.StatusCode, body)
		}
		return nil
	})
	agents := testoidc.New(t)
	addr := freeAddr(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
listen: %[1]s
public_url: http://%[1]s
database_url: sqlite://%[2]s
system_secret: %[3]s
issuers:
  - {url: %[4]s, audience: errand, kind: agent}
  - {url: %[5]s, audience: errand, kind: user, client_id: errand, algorithms: [RS256]}
actions: [{name: github.repo.read, class: read, risk: low}]
audiences: ["https://api.github.com"]
grants: [{group: eng, scopes: ["github.repo.read:acme/**"]}]
`, addr, filepath.Join(t.TempDir(), "e.db"), strings.Repeat("k", 32), agents.URL, srv)), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, _ := startServe(t, cfg, nil)
	d := &devServer{base: "http://" + a}
	out := d.must(t, "login")
	if !strings.Contains(out, "as "+srv+"#id1") {
		t.Fatalf("login said %q", out)
	}
	if _, c := loginFile(t); c.Issuer != srv || c.ClientID != "errand" {
		t.Fatalf("kept %+v", c)
	}
	d.must(t, "task", "list", "-o", "json")
	d.must(t, "logout")
}

// lateHandler is a test server whose handler is set once its URL is
// known (an issuer's URL is part of its config).
func lateHandler(t *testing.T) (string, func(http.Handler)) {
	var h atomicHandler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.get().ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	return srv.URL, h.set
}

type atomicHandler struct{ v atomic.Value }

func (a *atomicHandler) set(h http.Handler) { a.v.Store(&h) }
func (a *atomicHandler) get() http.Handler {
	if p, ok := a.v.Load().(*http.Handler); ok {
		return *p
	}
	return http.NotFoundHandler()
}

// TestLoginDevice: errand login --device (RFC 8628) against errand dev's
// provider: the person enters the code on the provider's page and picks
// who they are while the CLI polls.
func TestLoginDevice(t *testing.T) {
	useBrowser(t, func(c *http.Client, u string) error {
		v, err := url.Parse(u)
		if err != nil {
			return err
		}
		code := v.Query().Get("user_code")
		if code == "" {
			return fmt.Errorf("no user_code in %s", u)
		}
		res, err := c.PostForm(v.Scheme+"://"+v.Host+v.Path, url.Values{"user_code": {code}, "sub": {"carol"}, "groups": {"auditors"}})
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), "Signed in") {
			return fmt.Errorf("verify: %d %s", res.StatusCode, body)
		}
		return nil
	})
	d := startDev(t, "127.0.0.1:0", filepath.Join(t.TempDir(), "dev.db"))
	out := d.must(t, "login", "--device")
	if !strings.Contains(out, "as "+d.base+"/dev/idp/user#carol") {
		t.Fatalf("login said %q", out)
	}
	// carol is an auditor: the kept token reads the audit trail.
	d.must(t, "audit", "events", "-o", "json")
}

// TestLoginChoosesTheIssuer: with several user issuers errand login
// needs --issuer (a usage error naming them), and refuses a confidential
// client, whose secret a CLI cannot keep.
func TestLoginChoosesTheIssuer(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	m, err := signin.New(signin.Config{Store: &signin.SQLStore{}, PublicURL: "http://127.0.0.1:1", Verifier: testoidcVerifier{},
		Providers: []signin.Provider{
			{Issuer: "https://login.example.com", ClientID: "errand"},
			{Issuer: "https://partners.example.com", ClientID: "errand-web", ClientSecret: "s", RedirectPath: "/ui/callback/partners"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	var stderr strings.Builder
	if code := execute(context.Background(), []string{"login", "--server", srv.URL, "--no-browser"}, io.Discard, &stderr); code != exitUsage ||
		!strings.Contains(stderr.String(), "https://login.example.com, https://partners.example.com") {
		t.Fatalf("several issuers: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	if code := execute(context.Background(), []string{"login", "--server", srv.URL, "--issuer", "https://partners.example.com"}, io.Discard, &stderr); code != exitFailure ||
		!strings.Contains(stderr.String(), "needs a public client") {
		t.Fatalf("confidential client: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	if code := execute(context.Background(), []string{"login", "--server", srv.URL, "--issuer", "https://nope.example.com"}, io.Discard, &stderr); code != exitUsage {
		t.Fatalf("unknown issuer: exit %d, %s", code, stderr.String())
	}
}

type testoidcVerifier struct{}

func (testoidcVerifier) Verify(context.Context, string) (broker.Principal, error) {
	return broker.Principal{}, broker.ErrInvalidToken
}

// TestSessionsRevoke: a person signed in to the pages of errand serve is
// signed out everywhere by `errand sessions revoke`.
func TestSessionsRevoke(t *testing.T) {
	idpURL, set := lateHandler(t)
	idp, err := devidp.New(idpURL, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	set(idp.Handler())
	agents := testoidc.New(t)
	addr := freeAddr(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "errand.yaml")
	users := idp.IssuerURL("user")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
listen: %[1]s
public_url: http://%[1]s
database_url: sqlite://%[2]s
system_secret: %[3]s
issuers:
  - {url: %[4]s, audience: errand, kind: agent}
  - {url: %[5]s, audience: errand, kind: user, client_id: errand, algorithms: [EdDSA], groups_claim: groups}
actions: [{name: github.repo.read, class: read, risk: low}]
audiences: ["https://api.github.com"]
grants: [{group: eng, scopes: ["github.repo.read:acme/**"]}]
`, addr, filepath.Join(dir, "e.db"), strings.Repeat("k", 32), agents.URL, users)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := startServe(t, cfg, nil)
	base := "http://" + a
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	res, err := c.Get(base + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	form := res.Request.URL.Query()
	form.Set("sub", "alice")
	form.Set("groups", "eng")
	if res, err = c.PostForm(users+"/authorize", form); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/ui/" {
		t.Fatalf("after sign-in: %d at %s", res.StatusCode, res.Request.URL)
	}
	// An anonymous refusal goes through the API's Refuse (summarised,
	// not chained one by one) and is answered as a page.
	if res, err = http.Get(base + "/ui/callback?code=x"); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_request") {
		t.Fatalf("callback without state: %d %s", res.StatusCode, body)
	}
	noFollow := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page := func() int {
		res, err := noFollow.Get(base + "/ui/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if page() != http.StatusOK {
		t.Fatal("not signed in")
	}
	out := runCLI(t, "sessions", "revoke", "--config", cfgPath, users+"#alice")
	if !strings.Contains(out, "Ended 1 session(s) of "+users+"#alice") {
		t.Fatalf("revoke said %q", out)
	}
	if got := page(); got != http.StatusSeeOther {
		t.Fatalf("after revoke: %d", got)
	}
	var stderr strings.Builder
	if code := execute(context.Background(), []string{"sessions", "revoke", "--config", cfgPath, "https://other.example#alice"}, io.Discard, &stderr); code != exitUsage {
		t.Fatalf("an issuer not configured: exit %d %s", code, stderr.String())
	}
}
