package devidp

import (
	"crypto/rand"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// The device authorization grant (RFC 8628) of the user issuer, for
// `errand login --device`: POST device gives a device code and a user
// code; the person opens device/verify, enters the code and picks who
// they are; the token endpoint answers authorization_pending until then.

const (
	deviceTTL      = 10 * time.Minute
	deviceInterval = 1 // seconds between polls
	deviceGrant    = "urn:ietf:params:oauth:grant-type:device_code"
)

type deviceGrantState struct {
	userCode string
	req      *TokenRequest // set once the person has picked who they are
	expires  time.Time
}

func (p *Provider) deviceRoutes(mux *http.ServeMux) {
	iss := "/dev/idp/user"
	mux.HandleFunc("POST "+iss+"/device", p.deviceAuthorize)
	mux.HandleFunc("GET "+iss+"/device/verify", p.devicePage)
	mux.HandleFunc("POST "+iss+"/device/verify", p.deviceVerify)
}

// userCode is 8 letters without vowels (RFC 8628 §6.1), shown as XXXX-XXXX.
func userCode() string {
	const alphabet = "BCDFGHJKLMNPQRSTVWXZ"
	var b [8]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 0, 9)
	for i, c := range b {
		if i == 4 {
			out = append(out, '-')
		}
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out)
}

func (p *Provider) deviceAuthorize(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "malformed form")
		return
	}
	if r.PostForm.Get("client_id") != Audience {
		oauthError(w, "invalid_client", `the dev provider's client is "errand"`)
		return
	}
	dc, uc, now := random(), userCode(), p.now()
	p.flows.mu.Lock()
	p.flows.init()
	p.flows.sweep(now)
	if len(p.flows.devices) >= maxFlows {
		p.flows.mu.Unlock()
		oauthError(w, "slow_down", "too many sign-ins in progress")
		return
	}
	p.flows.devices[dc] = &deviceGrantState{userCode: uc, expires: now.Add(deviceTTL)}
	p.flows.mu.Unlock()
	verify := p.IssuerURL("user") + "/device/verify"
	write(w, http.StatusOK, map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": verify,
		"verification_uri_complete": verify + "?user_code=" + uc,
		"expires_in":                int(deviceTTL.Seconds()), "interval": deviceInterval,
	})
}

var devicePicker = template.Must(template.New("device").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>errand dev — sign in a device</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}
button{padding:.4rem .9rem;font:inherit;cursor:pointer}input{font:inherit;padding:.3rem}</style></head><body>
<h1>errand dev identity provider</h1>
{{if .Done}}<p>Signed in. Go back to your terminal.</p>{{else}}
<p>This development provider signs in whoever you say, on the device that shows this code.</p>
<form method="post" action="verify">
<p><label>Code <input name="user_code" required value="{{.Code}}"></label></p>
<p><label>Subject <input name="sub" required maxlength="256" value="alice"></label></p>
<p><label>Groups (comma-separated) <input name="groups" value="eng"></label></p>
<p><button type="submit">Sign in</button></p></form>{{end}}</body></html>`))

func (p *Provider) devicePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("Cache-Control", "no-store")
	_ = devicePicker.Execute(w, map[string]any{"Code": r.URL.Query().Get("user_code")})
}

func (p *Provider) deviceVerify(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	req := TokenRequest{Kind: "user", Sub: strings.TrimSpace(r.PostForm.Get("sub"))}
	for _, g := range strings.Split(r.PostForm.Get("groups"), ",") {
		if g = strings.TrimSpace(g); g != "" {
			req.Groups = append(req.Groups, g)
		}
	}
	if req.Sub == "" || len(req.Sub) > 256 || len(req.Groups) > 32 {
		http.Error(w, "sub is required (at most 256 bytes), at most 32 groups", http.StatusBadRequest)
		return
	}
	code := strings.ToUpper(strings.TrimSpace(r.PostForm.Get("user_code")))
	now := p.now()
	p.flows.mu.Lock()
	var found *deviceGrantState
	for _, d := range p.flows.devices {
		if d.userCode == code && d.req == nil && now.Before(d.expires) {
			found = d
		}
	}
	if found != nil {
		found.req = &req
	}
	p.flows.mu.Unlock()
	if found == nil {
		http.Error(w, "unknown, used or expired code", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	_ = devicePicker.Execute(w, map[string]any{"Done": true})
}

// deviceToken answers the device_code grant of the token endpoint; it is
// called with p.flows.mu held and releases it.
func (p *Provider) deviceToken(dc string, now time.Time) (TokenRequest, string, string) {
	d, ok := p.flows.devices[dc]
	switch {
	case !ok:
		p.flows.mu.Unlock()
		return TokenRequest{}, "invalid_grant", "unknown or used device code"
	case now.After(d.expires):
		delete(p.flows.devices, dc)
		p.flows.mu.Unlock()
		return TokenRequest{}, "expired_token", "the device code expired"
	case d.req == nil:
		p.flows.mu.Unlock()
		return TokenRequest{}, "authorization_pending", "waiting for the person to enter the code"
	}
	delete(p.flows.devices, dc)
	p.flows.mu.Unlock()
	return *d.req, "", ""
}
