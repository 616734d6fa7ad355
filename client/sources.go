package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// TokenSource yields an identity token (an OIDC ID token: the workload's,
// the user's, or the resource server's) for each call. Implementations are
// safe for concurrent use.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a source of one fixed token.
func StaticToken(token string) TokenSource { return staticToken(token) }

type staticToken string

func (s staticToken) Token(context.Context) (string, error) {
	if s == "" {
		return "", errors.New("no token")
	}
	return string(s), nil
}

// refreshMargin is how long before its exp a cached token is fetched
// anew.
const refreshMargin = time.Minute

// expiry is the exp claim of a JWT, read without verification (the
// server verifies; the client only decides when to fetch a fresh one).
func expiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(c.Exp, 0), true
}

// cached holds a token until shortly before it expires (or for fallback
// when it names no exp).
type cached struct {
	mu    sync.Mutex
	tok   string
	until time.Time
}

func (c *cached) get(ctx context.Context, fallback time.Duration, fetch func(context.Context) (string, error)) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok != "" && time.Now().Before(c.until) {
		return c.tok, nil
	}
	tok, err := fetch(ctx)
	if err != nil {
		return "", err
	}
	c.tok, c.until = tok, time.Now().Add(fallback)
	if exp, ok := expiry(tok); ok {
		c.until = exp.Add(-refreshMargin)
	}
	return tok, nil
}

// FileSource reads a token from a file, and reads it again whenever the
// file changes: Kubernetes projected service-account tokens, which the
// kubelet rotates in place (through a symbolic link swap), and any sidecar
// that writes a fresh token.
type FileSource struct {
	Path string

	mu   sync.Mutex
	mod  time.Time
	size int64
	tok  string
}

// FileToken is a FileSource of path.
func FileToken(path string) *FileSource { return &FileSource{Path: path} }

// Token returns the file's token, re-read when its modification time or
// size changed since the last read.
func (f *FileSource) Token(context.Context) (string, error) {
	fi, err := os.Stat(f.Path)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tok != "" && fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return f.tok, nil
	}
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s holds no token", f.Path)
	}
	f.tok, f.mod, f.size = tok, fi.ModTime(), fi.Size()
	return tok, nil
}

// GitHubActionsSource asks GitHub Actions' OIDC provider for the job's ID
// token (a job with `permissions: id-token: write`), as GitHub documents:
// GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=<audience> with
// "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN", answered
// {"value": "<JWT>"}. The token is kept until a minute before it expires.
type GitHubActionsSource struct {
	// Audience is the aud asked for: the audience Errand's issuer entry
	// for token.actions.githubusercontent.com expects.
	Audience string
	// RequestURL and RequestToken default to the environment's
	// ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN.
	RequestURL, RequestToken string
	HTTP                     *http.Client

	cache cached
}

// GitHubActionsToken is a GitHubActionsSource for audience.
func GitHubActionsToken(audience string) *GitHubActionsSource {
	return &GitHubActionsSource{Audience: audience}
}

func (g *GitHubActionsSource) Token(ctx context.Context) (string, error) {
	return g.cache.get(ctx, time.Minute, g.fetch)
}

func (g *GitHubActionsSource) fetch(ctx context.Context) (string, error) {
	reqURL, reqTok := g.RequestURL, g.RequestToken
	if reqURL == "" {
		reqURL = os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL")
	}
	if reqTok == "" {
		reqTok = os.Getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	}
	if reqURL == "" || reqTok == "" {
		return "", errors.New("ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: the job needs permissions: id-token: write")
	}
	u, err := url.Parse(reqURL)
	if err != nil {
		return "", fmt.Errorf("ACTIONS_ID_TOKEN_REQUEST_URL: %w", err)
	}
	if g.Audience != "" {
		q := u.Query()
		q.Set("audience", g.Audience)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "bearer "+reqTok)
	req.Header.Set("Accept", "application/json; api-version=2.0")
	hc := g.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	res, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GitHub Actions OIDC: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GitHub Actions OIDC: %s: %s", res.Status, bytes.TrimSpace(b))
	}
	var out struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Value == "" {
		return "", errors.New("GitHub Actions OIDC: the answer holds no token")
	}
	return out.Value, nil
}

// CommandSource runs a command that prints a token on its standard output
// (a cloud CLI, a credential helper) and keeps the token until a minute
// before its exp, or for Fallback when the token names none.
type CommandSource struct {
	Name string
	Args []string
	// Fallback is how long a token without exp is kept; default one
	// minute.
	Fallback time.Duration

	cache cached
}

// CommandToken is a CommandSource running name with args.
func CommandToken(name string, args ...string) *CommandSource {
	return &CommandSource{Name: name, Args: args}
}

func (c *CommandSource) Token(ctx context.Context) (string, error) {
	fb := c.Fallback
	if fb <= 0 {
		fb = time.Minute
	}
	return c.cache.get(ctx, fb, func(ctx context.Context) (string, error) {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, c.Name, c.Args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w: %s", c.Name, err, bytes.TrimSpace(stderr.Bytes()))
		}
		tok := strings.TrimSpace(string(out))
		if tok == "" {
			return "", fmt.Errorf("%s printed no token", c.Name)
		}
		return tok, nil
	})
}
