package resource

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/errandhq/errand/broker"
)

// Error is a refusal of a request's token (RFC 6750 §3.1, RFC 9449 §7.1).
type Error struct {
	// Status is 400, 401, 403 or 503.
	Status int
	// Code is the RFC 6750 error code: invalid_request, invalid_token,
	// insufficient_scope, invalid_dpop_proof, or temporarily_unavailable
	// (503); empty when no token was sent at all (§3.1).
	Code        string
	Description string
	// Scope is the scope needed, for insufficient_scope.
	Scope string
	// DPoP: the challenge is in the DPoP scheme (a bound token, or one
	// sent with it).
	DPoP bool
}

func (e *Error) Error() string {
	if e.Code == "" {
		return e.Description
	}
	return e.Code + ": " + e.Description
}

func invalidToken(desc string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: desc}
}

func invalidRequest(desc string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "invalid_request", Description: desc}
}

func unavailable(desc string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: desc}
}

// Middleware verifies every request's token (no scope) and passes the
// token on in the request's context (FromContext).
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return v.guard(nil, next)
}

// Require returns a middleware that lets a request through only with a
// valid token one of whose scopes covers action on resource (resource ""
// is the whole action, action:**). It panics when action:resource is not
// a valid scope, as regexp.MustCompile does: a route's scope is code.
func (v *Verifier) Require(action, resource string) func(http.Handler) http.Handler {
	need, err := parseNeed(action, resource)
	if err != nil {
		panic("resource: Require: " + err.Error())
	}
	return func(next http.Handler) http.Handler { return v.guard(&need, next) }
}

func (v *Verifier) guard(need *broker.Scope, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := v.Verify(r.Context(), r)
		if err != nil {
			v.WriteError(w, err)
			return
		}
		if need != nil {
			if err := check(t, *need); err != nil {
				v.WriteError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, t)))
	})
}

// check is Require's scope decision, with Errand's containment.
func check(t *Token, need broker.Scope) error {
	if t.covers(need) {
		return nil
	}
	return &Error{Status: http.StatusForbidden, Code: "insufficient_scope", Description: "the token does not cover " + need.String(),
		Scope: need.String(), DPoP: t.JKT != ""}
}

// WriteError answers a refusal: the status, an RFC 6750 (or RFC 9449)
// WWW-Authenticate challenge naming the resource metadata, and a JSON body
// {error, error_description}. An error that is not an *Error is a 500.
func (v *Verifier) WriteError(w http.ResponseWriter, err error) {
	e, ok := err.(*Error)
	if !ok {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if e.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	} else {
		h.Set("WWW-Authenticate", v.challenge(e))
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	code := e.Code
	if code == "" {
		code = "invalid_token"
	}
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
		Scope       string `json:"scope,omitempty"`
	}{code, e.Description, e.Scope})
}

// challenge is the WWW-Authenticate value of e.
func (v *Verifier) challenge(e *Error) string {
	var b strings.Builder
	if e.DPoP {
		b.WriteString(`DPoP algs="` + strings.Join(v.dpop.Algorithms(), " ") + `"`)
	} else {
		b.WriteString(`Bearer realm="` + quote(v.cfg.Audience) + `"`)
	}
	b.WriteString(`, resource_metadata="` + quote(v.MetadataURL()) + `"`)
	if e.Code != "" {
		b.WriteString(`, error="` + e.Code + `"`)
		if e.Description != "" {
			b.WriteString(`, error_description="` + quote(e.Description) + `"`)
		}
	}
	if e.Scope != "" {
		b.WriteString(`, scope="` + quote(e.Scope) + `"`)
	}
	return b.String()
}

// quote keeps a quoted-string quoted: RFC 6750 §3 values hold no '"' or
// '\'.
func quote(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return '\''
		}
		return r
	}, s)
}

// MetadataPath is where the Protected Resource Metadata is served (RFC
// 9728 §3.1): /.well-known/oauth-protected-resource, followed by the
// resource identifier's path when it has one.
func (v *Verifier) MetadataPath() string {
	p := "/.well-known/oauth-protected-resource"
	if u, err := url.Parse(v.cfg.Audience); err == nil && u.Path != "" && u.Path != "/" {
		p += u.EscapedPath()
	}
	return p
}

// MetadataURL is the absolute URL of the metadata, at PublicURL.
func (v *Verifier) MetadataURL() string { return v.public + v.MetadataPath() }

// Metadata is the RFC 9728 §2 Protected Resource Metadata of this
// resource server.
func (v *Verifier) Metadata() map[string]any {
	md := map[string]any{
		"resource":                          v.cfg.Audience,
		"authorization_servers":             []string{v.cfg.Issuer},
		"bearer_methods_supported":          []string{"header"},
		"dpop_signing_alg_values_supported": v.dpop.Algorithms(),
	}
	if len(v.cfg.ScopesSupported) > 0 {
		md["scopes_supported"] = v.cfg.ScopesSupported
	}
	if v.cfg.ResourceName != "" {
		md["resource_name"] = v.cfg.ResourceName
	}
	return md
}

// MetadataHandler serves Metadata; mount it at MetadataPath.
func (v *Verifier) MetadataHandler() http.Handler {
	body, _ := json.Marshal(v.Metadata())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(body)
	})
}
