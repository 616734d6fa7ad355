package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/strictjson"
)

// MaxTokenBytes bounds a bearer token; larger ones are refused before any
// parsing (CVE-2025-30204 class).
const MaxTokenBytes = 8 << 10

// DefaultAlgorithms is the signing-algorithm pin of an issuer that names
// none. Only asymmetric algorithms are ever accepted.
var DefaultAlgorithms = []string{oidc.RS256, oidc.ES256}

var allowedAlgorithms = map[string]bool{
	oidc.RS256: true, oidc.RS384: true, oidc.RS512: true,
	oidc.ES256: true, oidc.ES384: true, oidc.ES512: true,
	oidc.PS256: true, oidc.PS384: true, oidc.PS512: true, oidc.EdDSA: true,
}

// Issuer is one trusted identity provider.
type Issuer struct {
	URL          string
	Audience     string
	Kind         broker.Kind
	GroupsClaim  string
	AuditorGroup string
	AdminGroup   string
	// Algorithms pins the accepted signing algorithms; default RS256, ES256.
	Algorithms []string
	// MaxLifetime refuses tokens whose exp-iat is longer; 0 = 24 h.
	MaxLifetime time.Duration
	// Subjects, when not empty, are the only subjects this issuer may vouch
	// for (path.Match patterns, e.g. "repo:acme/*:ref:refs/heads/main"):
	// issuers such as GitHub Actions sign tokens for every workload on the
	// platform, and any of them could otherwise act as an agent.
	Subjects []string
	// SPIFFE, when set, makes the issuer a SPIFFE trust domain: its tokens
	// are JWT-SVIDs (no iss needed), its URL is spiffe://<trust domain>, and
	// Subjects are SPIFFE ID patterns.
	SPIFFE *SPIFFE
}

// Config configures a Verifier.
type Config struct {
	Issuers []Issuer
	// Self is Errand's own public URL; tokens it issued are never identity.
	Self       string
	HTTPClient *http.Client
	Now        func() time.Time
	// RefetchCooldown bounds JWKS refetches per issuer; default 30 s.
	RefetchCooldown time.Duration
	// CacheSize bounds the cache of verified tokens (default
	// DefaultCacheSize); negative disables it.
	CacheSize int
}

// Verifier turns bearer tokens into principals.
type Verifier struct {
	self    string
	now     func() time.Time
	issuers map[string]*trusted
	// byTD are the SPIFFE issuers by trust domain name.
	byTD  map[string]*trusted
	cache *tokenCache
}

type trusted struct {
	cfg     Issuer
	client  *http.Client
	now     func() time.Time
	cool    time.Duration
	mu      sync.Mutex
	ready   *oidc.IDTokenVerifier
	keys    *keySet
	lastTry time.Time
	spiffe  *spiffeTrust
}

// New validates the issuers and returns a Verifier. Discovery happens on
// first use, so Errand starts even while an identity provider is down.
func New(cfg Config) (*Verifier, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RefetchCooldown <= 0 {
		cfg.RefetchCooldown = 30 * time.Second
	}
	v := &Verifier{self: cfg.Self, now: cfg.Now, issuers: map[string]*trusted{}, byTD: map[string]*trusted{}}
	switch {
	case cfg.CacheSize == 0:
		v.cache = newTokenCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		v.cache = newTokenCache(cfg.CacheSize)
	}
	for i, is := range cfg.Issuers {
		if is.SPIFFE != nil {
			td := SPIFFEIssuerURL(is.SPIFFE.TrustDomain)
			if is.URL == "" {
				is.URL = td
			} else if is.URL != td {
				return nil, fmt.Errorf("issuers[%d]: a SPIFFE issuer's url is spiffe://<trust_domain> (%s), or left out", i, td)
			}
			if is.Kind == broker.KindUser {
				return nil, fmt.Errorf("issuers[%d]: a SPIFFE issuer is of kind agent or resource: SVIDs name workloads, not people", i)
			}
		} else if strings.HasPrefix(strings.ToLower(is.URL), "spiffe:") {
			return nil, fmt.Errorf("issuers[%d]: %s is a trust domain: configure it with spiffe: {trust_domain, bundle}", i, is.URL)
		}
		if is.URL == "" || is.Audience == "" {
			return nil, fmt.Errorf("issuers[%d]: url and audience are required", i)
		}
		if !is.Kind.Valid() {
			return nil, fmt.Errorf("issuers[%d]: kind must be agent, user or resource", i)
		}
		if SameURL(is.URL, cfg.Self) {
			return nil, fmt.Errorf("issuers[%d]: %s is Errand's own public_url; Errand's tokens are never identity", i, is.URL)
		}
		if _, dup := v.issuers[is.URL]; dup {
			return nil, fmt.Errorf("issuers[%d]: %s is configured twice", i, is.URL)
		}
		if len(is.Algorithms) == 0 {
			is.Algorithms = DefaultAlgorithms
		}
		for _, a := range is.Algorithms {
			if !allowedAlgorithms[a] {
				return nil, fmt.Errorf("issuers[%d]: algorithm %q is not an accepted asymmetric algorithm", i, a)
			}
		}
		if is.MaxLifetime <= 0 {
			is.MaxLifetime = 24 * time.Hour
		}
		t := &trusted{cfg: is, client: cfg.HTTPClient, now: cfg.Now, cool: cfg.RefetchCooldown}
		if is.SPIFFE != nil {
			st, err := newSPIFFE(is.SPIFFE, cfg.HTTPClient, cfg.Now, cfg.RefetchCooldown)
			if err != nil {
				return nil, fmt.Errorf("issuers[%d].%v", i, err)
			}
			for _, p := range is.Subjects {
				sp, err := parseSPIFFEPattern(st.td, p)
				if err != nil {
					return nil, fmt.Errorf("issuers[%d].subjects: %v", i, err)
				}
				st.subjects = append(st.subjects, sp)
			}
			t.spiffe = st
			v.byTD[st.td.Name()] = t
		} else {
			for _, p := range is.Subjects {
				if _, err := path.Match(p, ""); err != nil {
					return nil, fmt.Errorf("issuers[%d].subjects: %q is not a valid pattern", i, p)
				}
			}
		}
		v.issuers[is.URL] = t
	}
	return v, nil
}

// SameURL compares issuer URLs ignoring one trailing slash and the case of
// the scheme and host, for configuration checks only; tokens are always
// matched exactly.
func SameURL(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimSuffix(s, "/")
		if i := strings.Index(s, "://"); i >= 0 {
			rest := s[i+3:]
			host, path, _ := strings.Cut(rest, "/")
			s = strings.ToLower(s[:i+3]+host) + "/" + path
		}
		return s
	}
	return a != "" && b != "" && norm(a) == norm(b)
}

// Verify verifies raw and returns its principal. Errors are
// broker.ErrInvalidToken, broker.ErrTokenNotAccepted, or
// broker.ErrUnavailable when the issuer's discovery cannot be reached.
func (v *Verifier) Verify(ctx context.Context, raw string) (broker.Principal, error) {
	if v.cache == nil || raw == "" || len(raw) > MaxTokenBytes {
		p, _, err := v.verify(ctx, raw)
		return p, err
	}
	key := tokenKey(raw)
	now := v.now()
	if p, ok := v.cache.get(key, now); ok {
		return p, nil
	}
	p, exp, err := v.verify(ctx, raw)
	// A JWT-SVID is checked against its bundle every time: a key removed
	// from the bundle must stop verifying before the tokens it signed expire.
	if err == nil && !v.isSPIFFE(p.Issuer) {
		v.cache.put(key, p, exp, now)
	}
	return p, err
}

// verify checks raw fully and returns its principal and expiry.
func (v *Verifier) verify(ctx context.Context, raw string) (broker.Principal, time.Time, error) {
	if raw == "" {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "missing bearer token")
	}
	if len(raw) > MaxTokenBytes {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "bearer token larger than %d bytes", MaxTokenBytes)
	}
	hdr, iss, sub, err := peek(raw)
	if err != nil {
		return broker.Principal{}, time.Time{}, err
	}
	if strings.EqualFold(hdr.Typ, "at+jwt") || strings.EqualFold(hdr.Typ, "application/at+jwt") ||
		(v.self != "" && SameURL(iss, v.self)) {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrTokenNotAccepted, "an access token is not an identity")
	}
	// An ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant) is an
	// authorization grant for another server, whoever issued it: never a
	// bearer's, a subject's or a client's identity here.
	if strings.EqualFold(hdr.Typ, "oauth-id-jag+jwt") || strings.EqualFold(hdr.Typ, "application/oauth-id-jag+jwt") {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrTokenNotAccepted, "an ID-JAG is not an identity")
	}
	t, ok := v.issuers[iss]
	if ok && t.spiffe != nil {
		ok = false // a trust domain is chosen by the SVID's sub, never by iss
	}
	if !ok && strings.HasPrefix(sub, "spiffe://") {
		// A JWT-SVID: SPIRE leaves iss out unless configured; its trust
		// domain is the one of its SPIFFE ID, checked again by go-spiffe.
		if id, err := spiffeid.FromString(sub); err == nil {
			if st, found := v.byTD[id.TrustDomain().Name()]; found {
				return v.verifySPIFFE(ctx, st, hdr, raw)
			}
		}
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "untrusted trust domain")
	}
	if !ok {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "untrusted issuer")
	}
	verifier, err := t.verifier(ctx)
	if err != nil {
		return broker.Principal{}, time.Time{}, err
	}
	rep := &fetchReport{}
	idt, err := verifier.Verify(context.WithValue(ctx, reportKey{}, rep), raw)
	if err != nil {
		if rep.err != nil {
			return broker.Principal{}, time.Time{}, fmt.Errorf("%w: keys of %s: %v", broker.ErrUnavailable, iss, rep.err)
		}
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "%s", verifyFailure(err))
	}
	var claims map[string]json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "malformed claims")
	}
	now := v.now()
	if idt.IssuedAt.IsZero() {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "iat is required")
	}
	if idt.IssuedAt.After(now.Add(time.Minute)) {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "iat is in the future")
	}
	if idt.Expiry.Sub(idt.IssuedAt) > t.cfg.MaxLifetime {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "token lifetime longer than %s", t.cfg.MaxLifetime)
	}
	if idt.Subject == "" || len(idt.Subject) > 255 || strings.ContainsFunc(idt.Subject, unicode.IsControl) {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "sub is required: at most 255 bytes, no control characters")
	}
	// OIDC Core §3.1.3.7: with several audiences the token must name the
	// party it was issued to, and that party must be Errand (J08).
	if len(idt.Audience) > 1 {
		var azp string
		if raw, ok := claims["azp"]; !ok || json.Unmarshal(raw, &azp) != nil || azp != t.cfg.Audience {
			return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "a token for several audiences must carry azp %q", t.cfg.Audience)
		}
	}
	if !subjectAllowed(t.cfg.Subjects, idt.Subject) {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, "subject not allowed for this issuer")
	}
	p := broker.Principal{Issuer: iss, Subject: idt.Subject, Kind: t.cfg.Kind}
	if t.cfg.GroupsClaim != "" {
		if p.Groups, err = groups(claims[t.cfg.GroupsClaim]); err != nil {
			return broker.Principal{}, time.Time{}, err
		}
	}
	if p.Kind == broker.KindUser {
		for _, g := range p.Groups {
			p.Auditor = p.Auditor || (t.cfg.AuditorGroup != "" && g == t.cfg.AuditorGroup)
			p.Admin = p.Admin || (t.cfg.AdminGroup != "" && g == t.cfg.AdminGroup)
		}
	}
	return p, idt.Expiry, nil
}

// verifyFailure is the detail of a token that go-oidc refused, chosen from
// a fixed list: go-oidc's own messages quote the token's claims (its
// audience, its issuer), which are the unverified caller's words and never
// reach an answer or the audit log (H03).
func verifyFailure(err error) string {
	var expired *oidc.TokenExpiredError
	msg := err.Error()
	switch {
	case errors.As(err, &expired):
		return "token expired"
	case strings.Contains(msg, "expected audience"):
		return "token not issued for Errand's audience"
	case strings.Contains(msg, "different provider"):
		return "token issuer does not match"
	case strings.Contains(msg, "nbf"):
		return "token not yet valid"
	case strings.Contains(msg, "malformed"), strings.Contains(msg, "unmarshal"):
		return "malformed token"
	case strings.Contains(msg, "not signed"), strings.Contains(msg, "multiple signatures"):
		return "token must carry exactly one signature"
	case strings.Contains(msg, "signature"), strings.Contains(msg, "algorithm"), strings.Contains(msg, "kid"):
		return "signature does not verify with the issuer's keys"
	}
	return "token refused by its issuer's verification"
}

type header struct {
	Alg  string           `json:"alg"`
	Kid  string           `json:"kid"`
	Typ  string           `json:"typ"`
	Crit *json.RawMessage `json:"crit"`
}

// peek reads the header, iss and sub of an unverified token, only to
// choose the verifier; nothing read here is trusted.
func peek(raw string) (header, string, string, error) {
	var h header
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || strictjson.CheckKeys(hb) != nil || json.Unmarshal(hb, &h) != nil {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "malformed header")
	}
	// go-jose refuses unknown critical headers but lets an empty list
	// through; Errand understands no extension, so any crit is refused (J06).
	if h.Crit != nil {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "crit header not supported")
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "malformed payload")
	}
	// The standard library keeps the last of duplicate claims and matches
	// names case-insensitively: {"sub":"alice","sub":"admin"} or "SUB" are
	// refused before anything reads them (J12).
	if err := strictjson.CheckKeys(pb); err != nil {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "malformed payload: duplicate, case-variant or non-ASCII claim names, or bad JSON")
	}
	if !utf8.Valid(pb) {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "payload is not UTF-8")
	}
	var body struct {
		Iss string `json:"iss"`
		Sub any    `json:"sub"`
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	if err := dec.Decode(&body); err != nil {
		return h, "", "", broker.Errorf(broker.ErrInvalidToken, "malformed payload")
	}
	sub, _ := body.Sub.(string)
	return h, body.Iss, sub, nil
}

func subjectAllowed(patterns []string, sub string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, err := path.Match(p, sub); err == nil && ok {
			return true
		}
	}
	return false
}

func groups(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	return nil, broker.Errorf(broker.ErrInvalidToken, "groups claim is neither a string nor a list of strings")
}

// verifier runs discovery once (retrying at most every 5 s after a
// failure) and builds the issuer's go-oidc verifier.
func (t *trusted) verifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ready != nil {
		return t.ready, nil
	}
	if !t.lastTry.IsZero() && t.now().Sub(t.lastTry) < 5*time.Second {
		return nil, broker.Errorf(broker.ErrUnavailable, "identity provider %s unreachable", t.cfg.URL)
	}
	t.lastTry = t.now()
	dctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), t.client), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, t.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery of %s: %v", broker.ErrUnavailable, t.cfg.URL, err)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return nil, fmt.Errorf("%w: discovery of %s: no jwks_uri", broker.ErrUnavailable, t.cfg.URL)
	}
	algs := make([]jose.SignatureAlgorithm, len(t.cfg.Algorithms))
	for i, a := range t.cfg.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	ks := &keySet{url: meta.JWKSURI, client: t.client, algs: algs, cooldown: t.cool, now: t.now}
	if _, err := ks.refresh(ctx); err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrUnavailable, err)
	}
	t.keys = ks
	t.ready = oidc.NewVerifier(t.cfg.URL, ks, &oidc.Config{
		ClientID:             t.cfg.Audience,
		SupportedSigningAlgs: t.cfg.Algorithms,
		Now:                  t.now,
	})
	return t.ready, nil
}

func (v *Verifier) isSPIFFE(issuer string) bool {
	t, ok := v.issuers[issuer]
	return ok && t.spiffe != nil
}

// JWKSFetches reports how often the issuer's JWKS was fetched.
func (v *Verifier) JWKSFetches(issuer string) int {
	t, ok := v.issuers[issuer]
	if !ok {
		return 0
	}
	t.mu.Lock()
	ks := t.keys
	t.mu.Unlock()
	if ks == nil {
		return 0
	}
	return ks.Fetches()
}

// Kind returns the kind of a configured issuer.
func (v *Verifier) Kind(issuer string) (broker.Kind, bool) {
	t, ok := v.issuers[issuer]
	if !ok {
		return "", false
	}
	return t.cfg.Kind, true
}
