package signin

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/errandhq/errand/broker"
)

// flowTTL bounds a sign-in between the redirect to the provider and the
// callback.
const flowTTL = 10 * time.Minute

// DefaultRedirectPath is the callback path of a provider that names none.
const DefaultRedirectPath = "/ui/callback"

// DefaultScopes are the scopes asked of a provider that names none.
var DefaultScopes = []string{oidc.ScopeOpenID, "profile", "email"}

// Provider is a user issuer people sign in with.
type Provider struct {
	// Issuer is the issuer URL, exactly as in its tokens.
	Issuer string
	// ClientID is Errand's client at the issuer; its ID tokens' audience,
	// which the verifier requires.
	ClientID string
	// ClientSecret is empty for a public client (PKCE alone).
	ClientSecret string
	// RedirectPath is the callback path under the public URL (default
	// /ui/callback); each provider of several needs its own.
	RedirectPath string
	// Scopes asked; default openid profile email.
	Scopes []string
}

type provider struct {
	cfg      Provider
	redirect string

	mu        sync.Mutex
	discovery *discovered
	lastTry   time.Time
}

type discovered struct {
	endpoint oauth2.Endpoint
	// issParam: the provider promises the RFC 9207 iss parameter.
	issParam bool
	device   string
}

func newProvider(p Provider, public string) (*provider, error) {
	if p.Issuer == "" || p.ClientID == "" {
		return nil, errors.New("issuer and client_id are required")
	}
	if p.RedirectPath == "" {
		p.RedirectPath = DefaultRedirectPath
	}
	if _, ok := SafeReturnTo(p.RedirectPath); !ok || strings.ContainsAny(p.RedirectPath, "?#") {
		return nil, errors.New("redirect_path must be an absolute path")
	}
	if len(p.Scopes) == 0 {
		p.Scopes = DefaultScopes
	}
	if !slices.Contains(p.Scopes, oidc.ScopeOpenID) {
		p.Scopes = append([]string{oidc.ScopeOpenID}, p.Scopes...)
	}
	return &provider{cfg: p, redirect: public + p.RedirectPath}, nil
}

// discover reads the provider's metadata once (again at most every 5 s
// after a failure). It refuses a provider whose metadata lists PKCE
// methods without S256: the flow never falls back to plain or to none.
func (p *provider) discover(ctx context.Context, client *http.Client, now time.Time) (*discovered, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.discovery != nil {
		return p.discovery, nil
	}
	if !p.lastTry.IsZero() && now.Sub(p.lastTry) < 5*time.Second {
		return nil, broker.Errorf(broker.ErrUnavailable, "identity provider %s unreachable", p.cfg.Issuer)
	}
	p.lastTry = now
	dctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), client), 10*time.Second)
	defer cancel()
	op, err := oidc.NewProvider(dctx, p.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery of %s: %v", broker.ErrUnavailable, p.cfg.Issuer, err)
	}
	var md struct {
		Methods  []string `json:"code_challenge_methods_supported"`
		IssParam bool     `json:"authorization_response_iss_parameter_supported"`
		Device   string   `json:"device_authorization_endpoint"`
	}
	if err := op.Claims(&md); err != nil {
		return nil, fmt.Errorf("%w: discovery of %s: %v", broker.ErrUnavailable, p.cfg.Issuer, err)
	}
	if len(md.Methods) > 0 && !slices.Contains(md.Methods, "S256") {
		return nil, broker.Errorf(broker.ErrInvalidRequest, "identity provider %s does not support PKCE with S256", p.cfg.Issuer)
	}
	ep := op.Endpoint()
	if ep.AuthURL == "" || ep.TokenURL == "" {
		return nil, broker.Errorf(broker.ErrInvalidRequest, "identity provider %s has no authorization or token endpoint", p.cfg.Issuer)
	}
	if p.cfg.ClientSecret == "" {
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	p.discovery = &discovered{endpoint: ep, issParam: md.IssParam, device: md.Device}
	return p.discovery, nil
}

func (p *provider) oauth(d *discovered) *oauth2.Config {
	return &oauth2.Config{
		ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret, Endpoint: d.endpoint,
		RedirectURL: p.redirect, Scopes: p.cfg.Scopes,
	}
}

// Handler serves the sign-in routes: GET /ui/login, GET at each
// provider's redirect path, POST /ui/logout and GET /.well-known/errand-login
// (what `errand login` needs). Wrap it in Middleware.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/login", m.login)
	mux.HandleFunc("POST /ui/logout", m.logout)
	mux.HandleFunc("GET "+LoginConfigPath, m.loginConfig)
	seen := map[string]bool{}
	for _, p := range m.providers {
		if !seen[p.cfg.RedirectPath] {
			seen[p.cfg.RedirectPath] = true
			mux.HandleFunc("GET "+p.cfg.RedirectPath, m.callback)
		}
	}
	return m.Middleware(mux)
}

// Routes are the method and path patterns Handler serves (http.ServeMux
// syntax), for a router that mounts it beside the pages' own routes.
func (m *Manager) Routes() []string {
	out := []string{"GET /ui/login", "POST /ui/logout", "GET " + LoginConfigPath}
	for _, p := range m.providers {
		if r := "GET " + p.cfg.RedirectPath; !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// LoginConfigPath is the unauthenticated JSON document that tells
// `errand login` which issuers and clients to sign in with.
const LoginConfigPath = "/.well-known/errand-login"

// LoginConfig is the document at LoginConfigPath.
type LoginConfig struct {
	Issuers []LoginIssuer `json:"issuers"`
}

// LoginIssuer is one issuer people sign in with: its URL, Errand's
// client_id there (the audience of its ID tokens), the scopes to ask, and
// whether the client is public (no secret: usable by the CLI).
type LoginIssuer struct {
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
	Public   bool     `json:"public"`
}

func (m *Manager) loginConfig(w http.ResponseWriter, _ *http.Request) {
	lc := LoginConfig{Issuers: []LoginIssuer{}}
	for _, p := range m.providers {
		lc.Issuers = append(lc.Issuers, LoginIssuer{Issuer: p.cfg.Issuer, ClientID: p.cfg.ClientID, Scopes: p.cfg.Scopes, Public: p.cfg.ClientSecret == ""})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(lc)
}

const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Errand — {{.}}</title><style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}
a.button,button{display:inline-block;padding:.5rem 1rem;margin:.25rem 0;border:1px solid #333;border-radius:4px;background:#fff;color:#000;text-decoration:none;font:inherit;cursor:pointer}</style></head><body>{{end}}
{{define "choose"}}{{template "head" "Sign in"}}<h1>Sign in to Errand</h1><p>Choose your identity provider:</p><ul>
{{range .}}<li><a class="button" href="{{.Href}}">{{.Issuer}}</a></li>{{end}}</ul></body></html>{{end}}
{{define "error"}}{{template "head" "Sign-in failed"}}<h1>Sign-in failed</h1><p>{{.Detail}}</p><p><small>code: {{.Code}}</small></p>
<p><a class="button" href="/ui/login">Sign in again</a></p></body></html>{{end}}
{{define "signedout"}}{{template "head" "Signed out"}}<h1>You are signed out</h1>
<p><a class="button" href="/ui/login">Sign in again</a></p></body></html>{{end}}
`))

func render(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_ = pages.ExecuteTemplate(w, name, data)
}

// refuse answers a refused sign-in step as a page, after auditing it:
// a verified person's refusal as one request.refused event, a caller's
// with no verified identity through the Refuser (summaries). It leaves
// the store as it was (a flow taken is spent either way).
func (m *Manager) refuse(w http.ResponseWriter, r *http.Request, p broker.Principal, op string, err error) {
	status, code, detail := http.StatusBadRequest, broker.CodeOf(err), broker.RefusalDetail(err)
	switch {
	case errors.Is(err, broker.ErrUnavailable):
		status = http.StatusServiceUnavailable
	case errors.Is(err, broker.ErrInvalidToken), errors.Is(err, broker.ErrTokenNotAccepted):
		status = http.StatusUnauthorized
	case errors.Is(err, broker.ErrWrongPrincipalKind), errors.Is(err, ErrCSRF):
		status = http.StatusForbidden
	case errors.Is(err, broker.ErrRateLimited):
		status = http.StatusTooManyRequests
	case code == "":
		status, code, detail = http.StatusInternalServerError, "internal", "internal error"
	}
	switch {
	case p.Kind == "" && m.refuser != nil:
		status, code, detail = m.refuser.Refuse(w, r, p, "", err)
	case m.audit != nil:
		if aerr := m.audit.RecordRefusal(r.Context(), p, "", op, err); aerr != nil {
			m.log.ErrorContext(r.Context(), "audit of a sign-in refusal failed", "err", aerr)
			status, code, detail = http.StatusServiceUnavailable, "unavailable", "the refusal could not be recorded; try again shortly"
		}
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	m.log.WarnContext(r.Context(), "sign-in refused", "op", op, "code", code, "detail", detail)
	render(w, status, "error", struct{ Code, Detail string }{code, detail})
}

func (m *Manager) providerOf(issuer string) *provider {
	for _, p := range m.providers {
		if p.cfg.Issuer == issuer {
			return p
		}
	}
	return nil
}

// login starts a sign-in: with several providers and none chosen it
// shows the choice; otherwise it stores a flow and redirects to the
// provider's authorization endpoint.
func (m *Manager) login(w http.ResponseWriter, r *http.Request) {
	const op = "GET /ui/login"
	returnTo := "/ui/"
	if rt := r.URL.Query().Get("return_to"); rt != "" {
		p, ok := SafeReturnTo(rt)
		if !ok {
			m.refuse(w, r, broker.Principal{}, op, broker.Errorf(broker.ErrInvalidRequest, "return_to must be a path of this site"))
			return
		}
		returnTo = p
	}
	if len(m.providers) == 0 {
		m.refuse(w, r, broker.Principal{}, op, broker.Errorf(broker.ErrInvalidRequest, "no user issuer is configured for sign-in (client_id)"))
		return
	}
	var p *provider
	switch iss := r.URL.Query().Get("issuer"); {
	case iss != "":
		if p = m.providerOf(iss); p == nil {
			m.refuse(w, r, broker.Principal{}, op, broker.Errorf(broker.ErrInvalidRequest, "not an issuer people sign in with"))
			return
		}
	case len(m.providers) == 1:
		p = m.providers[0]
	default:
		type choice struct{ Issuer, Href string }
		var cs []choice
		for _, p := range m.providers {
			q := url.Values{"issuer": {p.cfg.Issuer}, "return_to": {returnTo}}
			cs = append(cs, choice{p.cfg.Issuer, "/ui/login?" + q.Encode()})
		}
		render(w, http.StatusOK, "choose", cs)
		return
	}
	if m.limitAddress != nil {
		if err := m.limitAddress(r); err != nil {
			m.refuse(w, r, broker.Principal{}, op, err)
			return
		}
	}
	if !m.starts.Allow() {
		w.Header().Set("Retry-After", "1")
		m.refuse(w, r, broker.Principal{}, op, broker.Errorf(broker.ErrRateLimited, "too many sign-ins being started; try again in a moment"))
		return
	}
	d, err := p.discover(r.Context(), m.client, m.now())
	if err != nil {
		m.refuse(w, r, broker.Principal{}, op, err)
		return
	}
	state, err1 := newID()
	nonce, err2 := newID()
	if err := errors.Join(err1, err2); err != nil {
		m.refuse(w, r, broker.Principal{}, op, err)
		return
	}
	verifier := oauth2.GenerateVerifier()
	now := m.now().UTC()
	f := Flow{
		StateHash: digest("state", state), Issuer: p.cfg.Issuer, Nonce: nonce, Verifier: verifier,
		RedirectURI: p.redirect, ReturnTo: returnTo, CreatedAt: now, ExpiresAt: now.Add(flowTTL),
	}
	if err := m.store.CreateFlow(r.Context(), f); err != nil {
		m.refuse(w, r, broker.Principal{}, op, err)
		return
	}
	// The state is bound to this browser: the callback requires the same
	// value in this cookie, so a code and state sent to a victim's browser
	// (login CSRF, RFC 9700 §4.7) finish nothing.
	m.setCookie(w, m.flowName, state, int(flowTTL/time.Second))
	to := p.oauth(d).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// callback finishes a sign-in (RFC 6749 §4.1.2, OpenID Connect Core
// §3.1.2.5–§3.1.3.7, RFC 9207).
func (m *Manager) callback(w http.ResponseWriter, r *http.Request) {
	op := "GET " + r.URL.Path
	q := r.URL.Query()
	fail := func(p broker.Principal, err error) { m.refuse(w, r, p, op, err) }
	state := q.Get("state")
	if state == "" {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "state is missing"))
		return
	}
	c, err := r.Cookie(m.flowName)
	m.clearCookie(w, m.flowName)
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "state does not belong to this browser's sign-in"))
		return
	}
	f, err := m.store.TakeFlow(r.Context(), digest("state", state))
	if errors.Is(err, broker.ErrNotFound) {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "unknown or already used state"))
		return
	}
	if err != nil {
		fail(broker.Principal{}, err)
		return
	}
	if !m.now().Before(f.ExpiresAt) {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "sign-in took too long; start again"))
		return
	}
	p := m.providerOf(f.Issuer)
	if p == nil || p.redirect != f.RedirectURI || p.cfg.RedirectPath != r.URL.Path {
		// Mix-up (RFC 9700 §4.4): the answer reached the callback of
		// another issuer than the one the flow was started for.
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "the answer came back to another issuer's callback"))
		return
	}
	d, err := p.discover(r.Context(), m.client, m.now())
	if err != nil {
		fail(broker.Principal{}, err)
		return
	}
	iss, hasIss := q["iss"]
	switch {
	case hasIss && (len(iss) != 1 || iss[0] != f.Issuer):
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "iss parameter names another issuer than the flow's (RFC 9207)"))
		return
	case !hasIss && d.issParam:
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "iss parameter missing, though the issuer promises it (RFC 9207)"))
		return
	}
	if e := q.Get("error"); e != "" {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "the identity provider refused: %.64q", e))
		return
	}
	code := q.Get("code")
	if code == "" {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "code is missing"))
		return
	}
	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, m.client)
	tok, err := p.oauth(d).Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "the identity provider refused the code: %.64q", re.ErrorCode))
		} else {
			fail(broker.Principal{}, fmt.Errorf("%w: token endpoint of %s: %v", broker.ErrUnavailable, f.Issuer, err))
		}
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		fail(broker.Principal{}, broker.Errorf(broker.ErrInvalidToken, "no id_token in the provider's answer"))
		return
	}
	user, err := m.VerifyIDToken(r.Context(), raw, f.Issuer, f.Nonce)
	if err != nil {
		fail(user, err)
		return
	}
	// Fixation: whatever session the browser had ends, and the new one
	// has a new id.
	if old, err := r.Cookie(m.cookie); err == nil && old.Value != "" && len(old.Value) <= 128 {
		if err := m.store.DeleteSession(r.Context(), digest("session", old.Value)); err != nil {
			fail(user, err)
			return
		}
	}
	if _, err := m.Start(r.Context(), w, user); err != nil {
		fail(user, err)
		return
	}
	http.Redirect(w, r, f.ReturnTo, http.StatusSeeOther)
}

// VerifyIDToken verifies raw as a bearer token is verified, then requires
// that it comes from issuer, names a user, and carries nonce (J14).
func (m *Manager) VerifyIDToken(ctx context.Context, raw, issuer, nonce string) (broker.Principal, error) {
	user, err := m.verifier.Verify(ctx, raw)
	if err != nil {
		return broker.Principal{}, err
	}
	if user.Issuer != issuer {
		return broker.Principal{}, broker.Errorf(broker.ErrInvalidToken, "the ID token comes from another issuer than the flow's")
	}
	if user.Kind != broker.KindUser {
		return broker.Principal{}, broker.Errorf(broker.ErrWrongPrincipalKind, "only a user signs in")
	}
	got, err := claimNonce(raw)
	if err != nil {
		return user, err
	}
	if nonce == "" || subtle.ConstantTimeCompare([]byte(got), []byte(nonce)) != 1 {
		return user, broker.Errorf(broker.ErrInvalidToken, "the ID token's nonce is missing or not the flow's")
	}
	return user, nil
}

// claimNonce reads the nonce of a token whose signature is verified.
func claimNonce(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", broker.Errorf(broker.ErrInvalidToken, "not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", broker.Errorf(broker.ErrInvalidToken, "malformed payload")
	}
	var c struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", broker.Errorf(broker.ErrInvalidToken, "malformed payload")
	}
	return c.Nonce, nil
}

// logout ends the session (POST /ui/logout, CSRF-checked).
func (m *Manager) logout(w http.ResponseWriter, r *http.Request) {
	const op = "POST /ui/logout"
	s, ok := FromContext(r.Context())
	if !ok {
		m.clearCookie(w, m.cookie)
		render(w, http.StatusOK, "signedout", nil)
		return
	}
	if err := m.CheckCSRF(r); err != nil {
		m.refuse(w, r, s.User, op, err)
		return
	}
	if err := m.End(r.Context(), w, s); err != nil {
		m.refuse(w, r, s.User, op, err)
		return
	}
	render(w, http.StatusOK, "signedout", nil)
}
