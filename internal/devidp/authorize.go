package devidp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The authorization code flow of the user issuer (RFC 6749 §4.1, PKCE
// RFC 7636 with S256 only, RFC 9207's iss in the answer): GET authorize
// shows a page where you pick who you are; POST authorize issues a code
// to the client's redirect URI; POST token redeems it once, for an ID
// token carrying the request's nonce and a refresh token. The client is
// public (client_id "errand", no secret). Redirect URIs are Errand's own
// (the provider's origin) or a loopback address on any port (RFC 8252
// §7.3), which is what `errand login` listens on.

const (
	codeTTL    = time.Minute
	refreshTTL = 12 * time.Hour
	maxFlows   = 10000
)

type codeGrant struct {
	req         TokenRequest
	redirectURI string
	challenge   string
	expires     time.Time
}

type refreshGrant struct {
	req     TokenRequest
	expires time.Time
}

type flows struct {
	mu      sync.Mutex
	codes   map[string]codeGrant
	refresh map[string]refreshGrant
	devices map[string]*deviceGrantState
}

func (f *flows) init() {
	if f.codes == nil {
		f.codes, f.refresh, f.devices = map[string]codeGrant{}, map[string]refreshGrant{}, map[string]*deviceGrantState{}
	}
}

func (f *flows) sweep(now time.Time) {
	for k, c := range f.codes {
		if now.After(c.expires) {
			delete(f.codes, k)
		}
	}
	for k, r := range f.refresh {
		if now.After(r.expires) {
			delete(f.refresh, k)
		}
	}
	for k, d := range f.devices {
		if now.After(d.expires) {
			delete(f.devices, k)
		}
	}
}

func (p *Provider) authorizeRoutes(mux *http.ServeMux) {
	iss := "/dev/idp/user"
	mux.HandleFunc("GET "+iss+"/authorize", p.authorizePage)
	mux.HandleFunc("POST "+iss+"/authorize", p.authorize)
	mux.HandleFunc("POST "+iss+"/token", p.codeToken)
	p.deviceRoutes(mux)
}

// authRequest is what the authorization endpoint was asked.
type authRequest struct {
	ClientID, RedirectURI, State, Nonce, Challenge, Scope string
}

// check validates an authorization request. The error is shown to the
// person: a bad redirect URI is never redirected to (RFC 6749 §4.1.2.1).
func (p *Provider) check(q url.Values) (authRequest, string) {
	ar := authRequest{
		ClientID: q.Get("client_id"), RedirectURI: q.Get("redirect_uri"), State: q.Get("state"),
		Nonce: q.Get("nonce"), Challenge: q.Get("code_challenge"), Scope: q.Get("scope"),
	}
	switch {
	case ar.ClientID != Audience:
		return ar, `unknown client_id: the dev provider's client is "errand"`
	case !p.redirectAllowed(ar.RedirectURI):
		return ar, "redirect_uri must be on Errand's own origin or a loopback address"
	case q.Get("response_type") != "code":
		return ar, "response_type must be code"
	case q.Get("code_challenge_method") != "S256" || len(ar.Challenge) < 43 || len(ar.Challenge) > 128:
		return ar, "PKCE is required: code_challenge with code_challenge_method S256"
	case len(ar.State) > 512 || len(ar.Nonce) > 512:
		return ar, "state or nonce too long"
	}
	return ar, ""
}

func (p *Provider) redirectAllowed(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Fragment != "" || u.User != nil || u.Host == "" {
		return false
	}
	if base, err := url.Parse(p.base); err == nil && u.Scheme == base.Scheme && u.Host == base.Host {
		return true
	}
	if u.Scheme != "http" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

var picker = template.Must(template.New("picker").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>errand dev — who are you?</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}
button{padding:.4rem .9rem;margin:.2rem 0;font:inherit;cursor:pointer}input{font:inherit;padding:.3rem}</style></head><body>
<h1>errand dev identity provider</h1>
<p>This development provider signs in whoever you say. Pick a person:</p>
{{range .People}}<form method="post" action="authorize">{{template "hidden" $.Req}}
<input type="hidden" name="sub" value="{{.Sub}}"><input type="hidden" name="groups" value="{{.Groups}}">
<button type="submit" name="pick" value="{{.Sub}}">{{.Sub}}</button> <small>groups: {{.Groups}}</small></form>{{end}}
<h2>Or someone else</h2>
<form method="post" action="authorize">{{template "hidden" .Req}}
<p><label>Subject <input name="sub" required maxlength="256" value="alice"></label></p>
<p><label>Groups (comma-separated) <input name="groups" value="eng"></label></p>
<p><button type="submit">Sign in</button></p></form></body></html>
{{define "hidden"}}<input type="hidden" name="client_id" value="{{.ClientID}}"><input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}"><input type="hidden" name="nonce" value="{{.Nonce}}">
<input type="hidden" name="code_challenge" value="{{.Challenge}}"><input type="hidden" name="code_challenge_method" value="S256">
<input type="hidden" name="response_type" value="code"><input type="hidden" name="scope" value="{{.Scope}}">{{end}}`))

// People are the picker's suggestions, matching the dev config's groups.
var People = []struct{ Sub, Groups string }{
	{"alice", "eng"}, {"bob", "eng"}, {"carol", "auditors"}, {"dana", "admins"},
}

func (p *Provider) authorizePage(w http.ResponseWriter, r *http.Request) {
	ar, bad := p.check(r.URL.Query())
	if bad != "" {
		http.Error(w, bad, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' "+originOf(ar.RedirectURI)+"; frame-ancestors 'none'")
	w.Header().Set("Cache-Control", "no-store")
	_ = picker.Execute(w, map[string]any{"Req": ar, "People": People})
}

func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	ar, bad := p.check(r.PostForm)
	if bad != "" {
		http.Error(w, bad, http.StatusBadRequest)
		return
	}
	req := TokenRequest{Kind: "user", Sub: strings.TrimSpace(r.PostForm.Get("sub")), Nonce: ar.Nonce}
	for _, g := range strings.Split(r.PostForm.Get("groups"), ",") {
		if g = strings.TrimSpace(g); g != "" {
			req.Groups = append(req.Groups, g)
		}
	}
	if req.Sub == "" || len(req.Sub) > 256 || len(req.Groups) > 32 {
		http.Error(w, "sub is required (at most 256 bytes), at most 32 groups", http.StatusBadRequest)
		return
	}
	code := random()
	now := p.now()
	p.flows.mu.Lock()
	p.flows.init()
	p.flows.sweep(now)
	if len(p.flows.codes) >= maxFlows {
		p.flows.mu.Unlock()
		http.Error(w, "too many sign-ins in progress", http.StatusServiceUnavailable)
		return
	}
	p.flows.codes[code] = codeGrant{req: req, redirectURI: ar.RedirectURI, challenge: ar.Challenge, expires: now.Add(codeTTL)}
	p.flows.mu.Unlock()
	u, _ := url.Parse(ar.RedirectURI)
	q := u.Query()
	q.Set("code", code)
	q.Set("iss", p.IssuerURL("user"))
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// codeToken is the token endpoint: authorization_code with PKCE, and
// refresh_token.
func (p *Provider) codeToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "malformed form")
		return
	}
	f := r.PostForm
	if f.Get("client_id") != Audience {
		oauthError(w, "invalid_client", `the dev provider's client is "errand"`)
		return
	}
	now := p.now()
	var req TokenRequest
	p.flows.mu.Lock()
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := p.flows.codes[f.Get("code")]
		delete(p.flows.codes, f.Get("code"))
		p.flows.mu.Unlock()
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !ok || now.After(c.expires):
			oauthError(w, "invalid_grant", "unknown, used or expired code")
			return
		case c.redirectURI != f.Get("redirect_uri"):
			oauthError(w, "invalid_grant", "redirect_uri differs from the authorization request's")
			return
		case subtle.ConstantTimeCompare([]byte(b64(sum[:])), []byte(c.challenge)) != 1:
			oauthError(w, "invalid_grant", "code_verifier does not match the code_challenge")
			return
		}
		req = c.req
	case "refresh_token":
		g, ok := p.flows.refresh[f.Get("refresh_token")]
		delete(p.flows.refresh, f.Get("refresh_token"))
		p.flows.mu.Unlock()
		if !ok || now.After(g.expires) {
			oauthError(w, "invalid_grant", "unknown, used or expired refresh token")
			return
		}
		req = g.req
		req.Nonce = ""
	case deviceGrant:
		var code, desc string
		if req, code, desc = p.deviceToken(f.Get("device_code"), now); code != "" {
			oauthError(w, code, desc)
			return
		}
	default:
		p.flows.mu.Unlock()
		oauthError(w, "unsupported_grant_type", "authorization_code, refresh_token or "+deviceGrant)
		return
	}
	tok, err := p.Issue(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// The refresh token rotates at each use (RFC 9700 §4.14.2).
	rt := random()
	p.flows.mu.Lock()
	p.flows.init()
	if len(p.flows.refresh) < maxFlows {
		p.flows.refresh[rt] = refreshGrant{req: TokenRequest{Kind: req.Kind, Sub: req.Sub, Groups: req.Groups}, expires: now.Add(refreshTTL)}
	} else {
		rt = ""
	}
	p.flows.mu.Unlock()
	out := map[string]any{"id_token": tok, "access_token": random(), "token_type": "Bearer", "expires_in": int(p.ttl.Seconds())}
	if rt != "" {
		out["refresh_token"] = rt
	}
	write(w, http.StatusOK, out)
}

func random() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return b64(b[:])
}

func oauthError(w http.ResponseWriter, code, desc string) {
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	write(w, status, map[string]string{"error": code, "error_description": desc})
}
