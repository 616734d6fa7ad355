// Package devidp is the development identity provider of `errand dev`: one
// OIDC issuer per principal kind (discovery and JWKS) and POST /dev/token,
// which hands out ID tokens for any name you choose. The user issuer also
// runs the authorization code flow with PKCE (authorize.go): a page where
// you pick who you are, and a token endpoint with refresh, so that signing
// in to the pages and `errand login` work without any setup. It trusts whoever asks,
// so it exists only in `errand dev`; `errand serve` never mounts it.
package devidp

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Audience is the aud of every ID token the provider issues.
const Audience = "errand"

// Kinds are the principal kinds, each its own issuer.
var Kinds = []string{"agent", "user", "resource"}

// Provider is the development identity provider.
type Provider struct {
	base string
	key  ed25519.PrivateKey
	kid  string
	ttl  time.Duration
	now  func() time.Time
	// flows are the codes and refresh tokens of the code flow.
	flows flows
}

// New returns a provider whose issuers live under base + "/dev/idp/<kind>",
// signing with an Ed25519 key derived from seed (32 bytes), so that tokens
// survive a restart with the same seed.
func New(base string, seed []byte) (*Provider, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("devidp: seed must be 32 bytes")
	}
	key := ed25519.NewKeyFromSeed(seed)
	tp, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(cryptoSHA256)
	if err != nil {
		return nil, err
	}
	return &Provider{base: strings.TrimSuffix(base, "/"), key: key, kid: b64(tp)[:16], ttl: time.Hour, now: time.Now}, nil
}

// IssuerURL is the issuer of tokens of kind.
func (p *Provider) IssuerURL(kind string) string { return p.base + "/dev/idp/" + kind }

// Handler serves /dev/idp/<kind>/.well-known/openid-configuration,
// /dev/idp/<kind>/jwks and POST /dev/token.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, k := range Kinds {
		iss := p.IssuerURL(k)
		mux.HandleFunc("GET /dev/idp/"+k+"/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
			md := map[string]any{
				"issuer": iss, "jwks_uri": iss + "/jwks",
				"response_types_supported":              []string{"id_token"},
				"subject_types_supported":               []string{"public"},
				"id_token_signing_alg_values_supported": []string{"EdDSA"},
			}
			if k == "user" {
				// People sign in with the code flow (authorize.go).
				md["authorization_endpoint"] = iss + "/authorize"
				md["token_endpoint"] = iss + "/token"
				md["response_types_supported"] = []string{"code"}
				md["grant_types_supported"] = []string{"authorization_code", "refresh_token", deviceGrant}
				md["device_authorization_endpoint"] = iss + "/device"
				md["code_challenge_methods_supported"] = []string{"S256"}
				md["token_endpoint_auth_methods_supported"] = []string{"none"}
				md["authorization_response_iss_parameter_supported"] = true
				md["scopes_supported"] = []string{"openid", "profile", "email", "groups"}
			}
			write(w, http.StatusOK, md)
		})
		mux.HandleFunc("GET /dev/idp/"+k+"/jwks", func(w http.ResponseWriter, _ *http.Request) {
			write(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
				Key: p.key.Public(), KeyID: p.kid, Algorithm: "EdDSA", Use: "sig",
			}}})
		})
	}
	mux.HandleFunc("POST /dev/token", p.token)
	p.authorizeRoutes(mux)
	return mux
}

// TokenRequest is the body of POST /dev/token.
type TokenRequest struct {
	Kind   string   `json:"kind"`
	Sub    string   `json:"sub"`
	Groups []string `json:"groups,omitempty"`
	// Nonce is the sign-in's nonce, for a token of the code flow.
	Nonce string `json:"-"`
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		problem(w, "malformed body: "+err.Error())
		return
	}
	known := false
	for _, k := range Kinds {
		known = known || k == req.Kind
	}
	switch {
	case !known:
		problem(w, `kind must be "agent", "user" or "resource"`)
		return
	case req.Sub == "" || len(req.Sub) > 256:
		problem(w, "sub is required (at most 256 bytes)")
		return
	case len(req.Groups) > 32:
		problem(w, "at most 32 groups")
		return
	}
	tok, err := p.Issue(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	write(w, http.StatusOK, map[string]any{"id_token": tok, "expires_in": int(p.ttl.Seconds())})
}

// Issue signs an ID token for req.
func (p *Provider) Issue(req TokenRequest) (string, error) {
	now := p.now()
	claims := map[string]any{
		"iss": p.IssuerURL(req.Kind), "sub": req.Sub, "aud": Audience,
		"iat": now.Unix(), "exp": now.Add(p.ttl).Unix(),
	}
	if len(req.Groups) > 0 {
		claims["groups"] = req.Groups
	}
	if req.Nonce != "" {
		claims["nonce"] = req.Nonce
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: p.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", p.kid))
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "urn:errand:problem:invalid_request", "title": "Bad Request",
		"status": http.StatusBadRequest, "detail": detail, "code": "invalid_request",
	})
}
