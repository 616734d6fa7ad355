package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"

	"github.com/errandhq/errand/signin"
)

// `errand login` signs a person in to a server from the command line, as
// `gh auth login` does: the authorization code flow with PKCE and a
// loopback redirect (RFC 8252 §7.3), or the device authorization grant
// (RFC 8628) with --device. The ID token (and refresh token) are kept per
// server in the user's config directory, mode 0600, and every command
// uses them when --token (ERRAND_TOKEN) and --token-file
// (ERRAND_TOKEN_FILE) are absent, refreshing the ID token when it expires.

// cachedLogin is the file kept per server.
type cachedLogin struct {
	Server       string    `json:"server"`
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	IDToken      string    `json:"id_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
}

// loginDir is where logins are kept: <user config dir>/errand/logins.
func loginDir() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory for the login cache: %w", err)
	}
	return filepath.Join(d, "errand", "logins"), nil
}

// loginPath is the cache file of server: a digest of its URL names it.
func loginPath(server string) (string, error) {
	d, err := loginDir()
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(strings.TrimSuffix(server, "/")))
	return filepath.Join(d, hex.EncodeToString(h[:12])+".json"), nil
}

func readLogin(server string) (*cachedLogin, error) {
	p, err := loginPath(server)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var c cachedLogin
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &c, nil
}

// writeLogin writes c with mode 0600 (its directory 0700), replacing the
// file in one rename so a reader never sees half of it.
func writeLogin(c *cachedLogin) error {
	p, err := loginPath(c.Server)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".login-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

// identityToken is the token commands send: --token, else --token-file,
// else the cached login of --server (refreshed when it has expired), else
// none.
func (g *globals) identityToken(ctx context.Context) (string, error) {
	if g.token != "" {
		return g.token, nil
	}
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return "", usageErrorf("--token-file: %v", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	c, err := readLogin(g.server)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if time.Until(c.Expiry) > 30*time.Second {
		return c.IDToken, nil
	}
	// A refresh token that rotates works once: commands running side by
	// side take turns, and the ones that wait find the new token.
	unlock, err := lockLogin(ctx, g.server)
	if err != nil {
		return "", err
	}
	defer unlock()
	if c, err = readLogin(g.server); err != nil {
		return "", err
	}
	if time.Until(c.Expiry) > 30*time.Second {
		return c.IDToken, nil
	}
	if c.RefreshToken == "" {
		return "", fmt.Errorf("your sign-in to %s has expired: run errand login", g.server)
	}
	if err := refreshLogin(ctx, c); err != nil {
		return "", fmt.Errorf("your sign-in to %s could not be refreshed (%v): run errand login", g.server, err)
	}
	return c.IDToken, nil
}

// lockLogin takes the lock of server's login file between errand
// processes (a lock file created exclusively; one older than 30 s is
// left over from a killed process and broken).
func lockLogin(ctx context.Context, server string) (func(), error) {
	p, err := loginPath(server)
	if err != nil {
		return nil, err
	}
	lock := p + ".lock"
	deadline := time.Now().Add(20 * time.Second)
	for {
		f, err := os.OpenFile(lock, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			f.Close()
			return func() { _ = os.Remove(lock) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if fi, err := os.Stat(lock); err == nil && time.Since(fi.ModTime()) > 30*time.Second {
			_ = os.Remove(lock)
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("another errand command holds %s", lock)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// refreshLogin trades c's refresh token for a new ID token, verified as
// at login, and keeps it.
func refreshLogin(ctx context.Context, c *cachedLogin) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	op, err := oidc.NewProvider(ctx, c.Issuer)
	if err != nil {
		return err
	}
	oc := &oauth2.Config{ClientID: c.ClientID, Endpoint: op.Endpoint()}
	oc.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: c.RefreshToken, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return err
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return errors.New("the provider's answer has no id_token")
	}
	idt, err := op.Verifier(&oidc.Config{ClientID: c.ClientID}).Verify(ctx, raw)
	if err != nil {
		return err
	}
	c.IDToken, c.Expiry = raw, idt.Expiry
	if tok.RefreshToken != "" {
		c.RefreshToken = tok.RefreshToken
	}
	return writeLogin(c)
}

// openBrowser opens u in the user's browser; tests replace it.
var openBrowser = func(u string) error {
	switch runtime.GOOS {
	case "darwin":
		return exec.Command("open", u).Start()
	case "windows":
		return exec.Command("rundll32", "url.dll,FileProtocolHandler", u).Start()
	}
	return exec.Command("xdg-open", u).Start()
}

func newLoginCmd(g *globals) *cobra.Command {
	var (
		issuer            string
		device, noBrowser bool
		timeout           time.Duration
	)
	cmd := &cobra.Command{
		Use:     "login",
		Example: "  errand login --server https://errand.example.com\n  errand login --device\n  errand login --issuer https://login.example.com --no-browser",
		Short:   "Sign in to --server with your identity provider, and keep the token for the other commands",
		Long: `Sign in to --server with your identity provider. errand login asks the server
which user issuers people sign in with (GET /.well-known/errand-login), then
runs the authorization code flow with PKCE, receiving the answer on a
loopback address (http://127.0.0.1:<port>/callback), or, with --device, the
device authorization grant (RFC 8628): you open a URL on any device and
enter a code. The ID token, and a refresh token if the provider issues one,
are kept for this server in your config directory (errand/logins, mode
0600); every command uses them when --token and --token-file are absent,
and refreshes the ID token when it has expired.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			li, err := g.loginIssuer(ctx, issuer)
			if err != nil {
				return err
			}
			op, err := oidc.NewProvider(ctx, li.Issuer)
			if err != nil {
				return fmt.Errorf("discovery of %s: %w", li.Issuer, err)
			}
			var md struct {
				Device  string   `json:"device_authorization_endpoint"`
				Methods []string `json:"code_challenge_methods_supported"`
			}
			if err := op.Claims(&md); err != nil {
				return err
			}
			oc := &oauth2.Config{ClientID: li.ClientID, Endpoint: op.Endpoint(), Scopes: li.Scopes}
			oc.Endpoint.AuthStyle = oauth2.AuthStyleInParams
			oc.Endpoint.DeviceAuthURL = md.Device
			var (
				tok   *oauth2.Token
				nonce string
			)
			if device {
				if md.Device == "" {
					return usageErrorf("--device: %s offers no device authorization endpoint; leave --device out", li.Issuer)
				}
				tok, err = deviceLogin(ctx, oc, noBrowser, cmd.ErrOrStderr())
			} else {
				if len(md.Methods) > 0 && !slices.Contains(md.Methods, "S256") {
					return fmt.Errorf("%s does not support PKCE with S256", li.Issuer)
				}
				tok, nonce, err = loopbackLogin(ctx, oc, li.Issuer, noBrowser, cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			raw, _ := tok.Extra("id_token").(string)
			if raw == "" {
				return errors.New("the provider's answer has no id_token")
			}
			idt, err := op.Verifier(&oidc.Config{ClientID: li.ClientID}).Verify(ctx, raw)
			if err != nil {
				return fmt.Errorf("the ID token does not verify: %w", err)
			}
			if !device && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
				return errors.New("the ID token's nonce is not this sign-in's")
			}
			c := &cachedLogin{Server: strings.TrimSuffix(g.server, "/"), Issuer: li.Issuer, ClientID: li.ClientID,
				IDToken: raw, RefreshToken: tok.RefreshToken, Expiry: idt.Expiry}
			if err := writeLogin(c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Signed in to %s as %s#%s\n", c.Server, idt.Issuer, idt.Subject)
			return nil
		},
	}
	cmd.Flags().StringVar(&issuer, "issuer", "", "the user issuer to sign in with, when the server has several")
	cmd.Flags().BoolVar(&device, "device", false, "use the device authorization grant (RFC 8628): open a URL on any device and enter a code")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the sign-in URL instead of opening a browser")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the sign-in")
	return cmd
}

// loginIssuer asks the server which issuer and client to sign in with.
func (g *globals) loginIssuer(ctx context.Context, want string) (signin.LoginIssuer, error) {
	var lc signin.LoginConfig
	c := g.clientWith("")
	if _, err := c.Do(ctx, http.MethodGet, signin.LoginConfigPath, nil, &lc); err != nil {
		return signin.LoginIssuer{}, fmt.Errorf("%s: %w", signin.LoginConfigPath, err)
	}
	var names []string
	for _, li := range lc.Issuers {
		names = append(names, li.Issuer)
		if want == "" && len(lc.Issuers) == 1 || want == li.Issuer {
			if !li.Public {
				return li, fmt.Errorf("%s: Errand's client there has a secret; errand login needs a public client (no client_secret_file)", li.Issuer)
			}
			return li, nil
		}
	}
	switch {
	case len(names) == 0:
		return signin.LoginIssuer{}, fmt.Errorf("%s lets no one sign in: no user issuer has a client_id", g.server)
	case want == "":
		return signin.LoginIssuer{}, usageErrorf("--issuer: %s has several user issuers: %s", g.server, strings.Join(names, ", "))
	}
	return signin.LoginIssuer{}, usageErrorf("--issuer: %s is not one of %s", want, strings.Join(names, ", "))
}

// loopbackLogin runs the code flow with PKCE, state and nonce, receiving
// the answer on a loopback port (RFC 8252 §7.3, RFC 9207's iss checked
// when sent).
func loopbackLogin(ctx context.Context, oc *oauth2.Config, issuer string, noBrowser bool, msg io.Writer) (*oauth2.Token, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	defer ln.Close()
	oc.RedirectURL = "http://" + ln.Addr().String() + "/callback"
	state, nonce, verifier := rand32(), rand32(), oauth2.GenerateVerifier()
	type answer struct {
		code string
		err  error
	}
	got := make(chan answer, 1)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var a answer
		switch iss, has := q["iss"]; {
		case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1:
			http.Error(w, "This answer is not for this sign-in.", http.StatusBadRequest)
			return
		case has && (len(iss) != 1 || iss[0] != issuer):
			a.err = errors.New("the answer names another issuer (RFC 9207)")
		case q.Get("error") != "":
			a.err = fmt.Errorf("the identity provider refused: %.64q %.200q", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			a.err = errors.New("the answer has no code")
		default:
			a.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if a.err != nil {
			fmt.Fprintln(w, "Sign-in failed; see your terminal.")
		} else {
			fmt.Fprintln(w, "Signed in. You can close this window and go back to your terminal.")
		}
		select {
		case got <- a:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	u := oc.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	fmt.Fprintf(msg, "Open this URL to sign in:\n\n  %s\n\n", u)
	if !noBrowser {
		if err := openBrowser(u); err != nil {
			fmt.Fprintf(msg, "(could not open a browser: %v)\n", err)
		}
	}
	select {
	case <-ctx.Done():
		return nil, "", errors.New("timed out waiting for the sign-in")
	case a := <-got:
		if a.err != nil {
			return nil, "", a.err
		}
		tok, err := oc.Exchange(ctx, a.code, oauth2.VerifierOption(verifier))
		return tok, nonce, err
	}
}

// deviceLogin runs the device authorization grant (RFC 8628): it shows
// the code and where to enter it (on this machine's browser too, unless
// noBrowser), then polls the token endpoint.
func deviceLogin(ctx context.Context, oc *oauth2.Config, noBrowser bool, msg io.Writer) (*oauth2.Token, error) {
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return nil, err
	}
	open := da.VerificationURI
	if da.VerificationURIComplete != "" {
		open = da.VerificationURIComplete
		fmt.Fprintf(msg, "Open %s\n(or %s and enter the code %s)\n", da.VerificationURIComplete, da.VerificationURI, da.UserCode)
	} else {
		fmt.Fprintf(msg, "Open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
	}
	if !noBrowser {
		if err := openBrowser(open); err != nil {
			fmt.Fprintf(msg, "(could not open a browser: %v)\n", err)
		}
	}
	return oc.DeviceAccessToken(ctx, da)
}

// rand32 is 256 random bits, base64url (crypto/rand never fails).
func rand32() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newLogoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Example: "  errand logout --server https://errand.example.com",
		Short:   "Forget the sign-in to --server kept by errand login",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := readLogin(g.server)
			if errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(cmd.OutOrStdout(), "Not signed in to %s\n", g.server)
				return nil
			}
			if err != nil {
				return err
			}
			if c.RefreshToken != "" {
				revokeRefresh(cmd.Context(), c)
			}
			p, err := loginPath(g.server)
			if err != nil {
				return err
			}
			if err := os.Remove(p); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Signed out of %s\n", c.Server)
			return nil
		},
	}
}

// revokeRefresh revokes the refresh token at the provider (RFC 7009)
// when it has a revocation endpoint; the cached file goes either way.
func revokeRefresh(ctx context.Context, c *cachedLogin) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	op, err := oidc.NewProvider(ctx, c.Issuer)
	if err != nil {
		return
	}
	var md struct {
		Revocation string `json:"revocation_endpoint"`
	}
	if op.Claims(&md) != nil || md.Revocation == "" {
		return
	}
	form := strings.NewReader("token=" + url.QueryEscape(c.RefreshToken) + "&token_type_hint=refresh_token&client_id=" + url.QueryEscape(c.ClientID))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.Revocation, form)
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}
}

// loginFailed answers every request of a command whose kept sign-in
// cannot be used (expired, refresh refused) as the server would answer a
// request without a valid token: 401 invalid_token (exit 3), saying why.
// A --token-file that cannot be read stays a usage error.
type loginFailed struct{ err error }

func (l loginFailed) RoundTrip(r *http.Request) (*http.Response, error) {
	var u usageError
	if errors.As(l.err, &u) {
		return nil, l.err
	}
	b, _ := json.Marshal(map[string]any{"status": http.StatusUnauthorized, "code": "invalid_token", "title": "Unauthorized", "detail": l.err.Error()})
	return &http.Response{
		StatusCode: http.StatusUnauthorized, Status: "401 Unauthorized", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/problem+json"}}, Body: io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)), Request: r,
	}, nil
}
