package resource

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/dpop"
)

// Defaults and bounds of Config.
const (
	DefaultLeeway          = 5 * time.Second
	MaxLeeway              = time.Minute
	DefaultRefetchCooldown = 30 * time.Second
	DefaultKeysRefresh     = 5 * time.Minute
	DefaultMaxStale        = 5 * time.Second
	DefaultStreamIdle      = 40 * time.Second
	DefaultPollInterval    = time.Second
	DefaultRetention       = time.Hour
	// MaxTokenBytes bounds a token before it is parsed.
	MaxTokenBytes = 8 << 10
)

// TokenType is the typ header of Errand's access tokens (RFC 9068 §2.1).
const TokenType = "at+jwt"

// Credential yields the resource server's own workload ID token, with
// which it reads the revocation feed and introspects. The token sources of
// package client satisfy it.
type Credential interface {
	Token(ctx context.Context) (string, error)
}

// Config configures a Verifier. Issuer, Audience and Credential are
// required.
type Config struct {
	// Issuer is Errand's public URL: the iss of its tokens.
	Issuer string
	// ErrandURL is where this resource server reaches Errand for the JWKS,
	// the feed and introspection; default Issuer.
	ErrandURL string
	// Audience is this resource server's audience, as configured in
	// Errand's audiences: the aud every accepted token carries, and the
	// resource of its Protected Resource Metadata.
	Audience string
	// Credential authenticates the resource server to Errand.
	Credential Credential
	// HTTPClient calls Errand; default a client with a 10 s timeout for
	// requests (the stream has none).
	HTTPClient *http.Client

	// Leeway is the clock skew allowed on exp, nbf and iat; default
	// DefaultLeeway, at most MaxLeeway.
	Leeway time.Duration
	// RefetchCooldown is the least time between two JWKS fetches caused
	// by unknown kids; default DefaultRefetchCooldown.
	RefetchCooldown time.Duration
	// KeysRefresh is how often Run refetches the JWKS (rotation); default
	// DefaultKeysRefresh.
	KeysRefresh time.Duration

	// MaxStale is how long tokens are still accepted after the feed was
	// last known current and is no longer; default DefaultMaxStale.
	MaxStale time.Duration
	// StreamIdle is how long an open stream may stay silent before it is
	// taken for dead; default DefaultStreamIdle.
	StreamIdle time.Duration
	// PollInterval is the polling period while the stream is unavailable;
	// default DefaultPollInterval.
	PollInterval time.Duration
	// Retention is how long a revoked jti is remembered; a token whose
	// life (exp − iat) plus Leeway exceeds it is refused, since it could
	// outlive its revocation's memory. Set it above Errand's
	// limits.token_ttl_max plus Leeway. Default DefaultRetention.
	Retention time.Duration
	// Introspect makes a Verifier whose feed is past its bound ask
	// POST /v1/introspect for each token instead of refusing every one.
	Introspect bool

	// PublicURL is the scheme and host this resource server is reached at
	// (DPoP proofs' htu is PublicURL + the request's path); default the
	// scheme and host of Audience.
	PublicURL string
	// DPoPAlgorithms are the DPoP proof algorithms accepted; default
	// dpop.DefaultAlgorithms.
	DPoPAlgorithms []string
	// DPoPReplay remembers DPoP proofs' jti; default an in-memory cache,
	// right for one replica (replicas of one resource server must share
	// one).
	DPoPReplay dpop.ReplayCache

	// ScopesSupported and ResourceName go into the Protected Resource
	// Metadata.
	ScopesSupported []string
	ResourceName    string

	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives the feed's warnings; default discard.
	Logger *slog.Logger
}

// Verifier checks Errand access tokens for one resource server. It is
// safe for concurrent use; Run keeps it current.
type Verifier struct {
	cfg    Config
	errand string
	public string
	keys   *keySet
	dpop   *dpop.Verifier
	log    *slog.Logger

	// freshUntil is the unix nanosecond time until which the feed counts
	// as current (0: never synced).
	freshUntil atomic.Int64
	streaming  atomic.Bool
	ready      chan struct{}
	readyOnce  sync.Once

	mu      sync.RWMutex
	revoked map[string]time.Time // jti → revoked_at
	cursor  int64

	// verified remembers the tokens whose signature and claims were
	// checked, by their SHA-256, so that a token used again costs a hash;
	// revocation, binding and expiry are still checked at every use.
	vmu      sync.RWMutex
	verified map[[32]byte]verifiedToken
	noCache  bool // benchmarks of the first sight only
}

type verifiedToken struct {
	kid string
	tok *Token
}

// maxVerified bounds the verified-token memory; when full it is emptied.
const maxVerified = 10000

// New returns a Verifier for cfg. It does no I/O: call Run to follow the
// feed; until the feed is first read every token is refused (or
// introspected).
func New(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("resource: Issuer and Audience are required")
	}
	if cfg.Credential == nil {
		return nil, errors.New("resource: Credential is required (the feed needs the resource server's identity)")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Leeway < 0 || cfg.Leeway > MaxLeeway {
		return nil, fmt.Errorf("resource: Leeway must be within (0, %s]", MaxLeeway)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.RefetchCooldown, DefaultRefetchCooldown)
	def(&cfg.KeysRefresh, DefaultKeysRefresh)
	def(&cfg.MaxStale, DefaultMaxStale)
	def(&cfg.StreamIdle, DefaultStreamIdle)
	def(&cfg.PollInterval, DefaultPollInterval)
	def(&cfg.Retention, DefaultRetention)
	if cfg.PollInterval >= cfg.MaxStale {
		return nil, errors.New("resource: PollInterval must be shorter than MaxStale")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	errand := strings.TrimSuffix(cfg.ErrandURL, "/")
	if errand == "" {
		errand = strings.TrimSuffix(cfg.Issuer, "/")
	}
	if _, err := url.Parse(errand); err != nil {
		return nil, fmt.Errorf("resource: ErrandURL: %w", err)
	}
	public := strings.TrimSuffix(cfg.PublicURL, "/")
	if public == "" {
		u, err := url.Parse(cfg.Audience)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, errors.New("resource: PublicURL is required when Audience is not a URL")
		}
		public = u.Scheme + "://" + u.Host
	}
	if cfg.DPoPReplay == nil {
		cfg.DPoPReplay = newMemoryReplay(cfg.Now)
	}
	dv, err := dpop.New(dpop.Config{Algorithms: cfg.DPoPAlgorithms, Now: cfg.Now, Replay: cfg.DPoPReplay})
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	v := &Verifier{
		cfg: cfg, errand: errand, public: public, dpop: dv, log: cfg.Logger,
		ready: make(chan struct{}), revoked: map[string]time.Time{},
	}
	v.keys = &keySet{url: errand + "/.well-known/jwks.json", client: cfg.HTTPClient, cooldown: cfg.RefetchCooldown, now: cfg.Now}
	return v, nil
}

// Token is a verified Errand access token.
type Token struct {
	// Raw is the compact JWT.
	Raw      string
	Issuer   string
	Subject  string // the user on whose behalf the agent acts
	ClientID string // the agent
	// Actor is RFC 8693's act: the agent and its issuer.
	Actor     Actor
	Audience  string
	Scopes    []string
	TaskID    string
	JTI       string
	IssuedAt  time.Time
	NotBefore time.Time
	ExpiresAt time.Time
	// JKT is the thumbprint of the key the token is bound to (cnf.jkt);
	// empty for a bearer token.
	JKT string
	// Introspected: the feed was past its bound and Errand's introspection
	// answered for the token.
	Introspected bool

	scopes broker.Scopes
	kid    string
}

// Actor is the agent acting for the user.
type Actor struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
}

// LogValue redacts the token (it is a bearer credential).
func (t *Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("jti", t.JTI), slog.String("task_id", t.TaskID), slog.String("client_id", t.ClientID))
}

// Allows reports whether one of the token's scopes covers action on
// resource ("" for the whole action), by Errand's own containment.
func (t *Token) Allows(action, resource string) bool {
	need, err := parseNeed(action, resource)
	if err != nil {
		return false
	}
	return t.covers(need)
}

func (t *Token) covers(need broker.Scope) bool { return t.scopes.Covers(need) }

func parseNeed(action, resource string) (broker.Scope, error) {
	s := action
	if resource != "" {
		s += ":" + resource
	}
	return broker.ParseScope(s)
}

type tokenKey struct{}

// FromContext returns the token the middleware verified for this request.
func FromContext(ctx context.Context) (*Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(*Token)
	return t, ok
}

// claims are an access token's payload (RFC 9068 §2.2 and Errand's).
type claims struct {
	Iss      string `json:"iss"`
	Sub      string `json:"sub"`
	Act      Actor  `json:"act"`
	ClientID string `json:"client_id"`
	Aud      string `json:"aud"`
	Scope    string `json:"scope"`
	TaskID   string `json:"task_id"`
	JTI      string `json:"jti"`
	IAT      int64  `json:"iat"`
	NBF      int64  `json:"nbf"`
	EXP      int64  `json:"exp"`
	Cnf      *struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
}

func (c *claims) GetExpirationTime() (*gojwt.NumericDate, error) { return numeric(c.EXP), nil }
func (c *claims) GetIssuedAt() (*gojwt.NumericDate, error)       { return numeric(c.IAT), nil }
func (c *claims) GetNotBefore() (*gojwt.NumericDate, error)      { return numeric(c.NBF), nil }
func (c *claims) GetIssuer() (string, error)                     { return c.Iss, nil }
func (c *claims) GetSubject() (string, error)                    { return c.Sub, nil }
func (c *claims) GetAudience() (gojwt.ClaimStrings, error)       { return gojwt.ClaimStrings{c.Aud}, nil }

func numeric(v int64) *gojwt.NumericDate {
	if v == 0 {
		return nil
	}
	return gojwt.NewNumericDate(time.Unix(v, 0))
}

type header struct {
	Alg  string          `json:"alg"`
	KID  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

// Verify checks the access token of r (Authorization: Bearer or DPoP) and
// its DPoP proof when it is bound; it checks no scope (see Require and
// Token.Allows). A refusal is an *Error.
func (v *Verifier) Verify(ctx context.Context, r *http.Request) (*Token, error) {
	raw, scheme, err := credentials(r)
	if err != nil {
		return nil, err
	}
	t, err := v.verifyToken(ctx, raw)
	if err != nil {
		if e := (*Error)(nil); errors.As(err, &e) && scheme == "DPoP" {
			e.DPoP = true
		}
		return nil, err
	}
	if err := v.checkBinding(ctx, r, t, scheme); err != nil {
		return nil, err
	}
	if err := v.checkRevocation(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

// credentials reads the Authorization header (RFC 6750 §2.1, RFC 9449 §7.1).
func credentials(r *http.Request) (raw, scheme string, err error) {
	h := r.Header.Values("Authorization")
	if len(h) == 0 {
		return "", "", &Error{Status: http.StatusUnauthorized, Description: "an access token is required"}
	}
	if len(h) > 1 {
		return "", "", invalidRequest("one Authorization header is allowed")
	}
	scheme, raw, ok := strings.Cut(h[0], " ")
	switch {
	case !ok || raw == "" || strings.ContainsAny(raw, " \t"):
		return "", "", invalidRequest("malformed Authorization header")
	case strings.EqualFold(scheme, "Bearer"):
		scheme = "Bearer"
	case strings.EqualFold(scheme, "DPoP"):
		scheme = "DPoP"
	default:
		return "", "", invalidRequest("the Authorization scheme must be Bearer or DPoP")
	}
	return raw, scheme, nil
}

// verifyToken checks raw's header, signature and claims.
func (v *Verifier) verifyToken(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > MaxTokenBytes {
		return nil, invalidToken("token too large")
	}
	sum := sha256.Sum256([]byte(raw))
	if !v.noCache {
		v.vmu.RLock()
		c, ok := v.verified[sum]
		v.vmu.RUnlock()
		if ok && v.cfg.Now().Before(c.tok.ExpiresAt.Add(v.cfg.Leeway)) {
			if _, held := v.keys.lookup(c.kid); held {
				t := *c.tok
				return &t, nil
			}
		}
	}
	t, err := v.checkToken(ctx, raw)
	if err != nil {
		return nil, err
	}
	v.vmu.Lock()
	if len(v.verified) >= maxVerified || v.verified == nil {
		v.verified = make(map[[32]byte]verifiedToken)
	}
	v.verified[sum] = verifiedToken{kid: t.kid, tok: t}
	v.vmu.Unlock()
	c := *t
	return &c, nil
}

// checkToken verifies raw's header, signature and claims.
func (v *Verifier) checkToken(ctx context.Context, raw string) (*Token, error) {
	h, err := parseHeader(raw)
	if err != nil {
		return nil, err
	}
	k, err := v.keys.key(ctx, h.KID)
	if err != nil {
		return nil, err
	}
	// The header's alg must be the key's: alg confusion (HS256 keyed with
	// the public key, none) never reaches a verification.
	if h.Alg != k.alg {
		return nil, invalidToken("the token's algorithm is not its key's")
	}
	var c claims
	p := gojwt.NewParser(
		gojwt.WithValidMethods([]string{k.alg}),
		gojwt.WithIssuer(v.cfg.Issuer),
		gojwt.WithAudience(v.cfg.Audience),
		gojwt.WithExpirationRequired(),
		gojwt.WithIssuedAt(),
		gojwt.WithTimeFunc(v.cfg.Now),
		gojwt.WithLeeway(v.cfg.Leeway),
		gojwt.WithStrictDecoding(),
	)
	if _, err := p.ParseWithClaims(raw, &c, func(*gojwt.Token) (any, error) { return k.key, nil }); err != nil {
		return nil, invalidToken(tokenProblem(err))
	}
	if c.JTI == "" || c.TaskID == "" || c.Sub == "" {
		return nil, invalidToken("the token lacks jti, task_id or sub")
	}
	// A revocation is remembered for Retention: a token that lives longer
	// could outlive the memory of its own revocation and be accepted
	// again, so it is refused whatever its signature.
	if time.Duration(c.EXP-c.IAT)*time.Second+v.cfg.Leeway > v.cfg.Retention {
		return nil, invalidToken("the token lives longer than this verifier remembers revocations (Retention)")
	}
	t := &Token{
		Raw: raw, Issuer: c.Iss, Subject: c.Sub, ClientID: c.ClientID, Actor: c.Act, Audience: c.Aud,
		TaskID: c.TaskID, JTI: c.JTI, IssuedAt: time.Unix(c.IAT, 0).UTC(), NotBefore: time.Unix(c.NBF, 0).UTC(),
		ExpiresAt: time.Unix(c.EXP, 0).UTC(), kid: h.KID,
	}
	if c.Cnf != nil {
		if c.Cnf.JKT == "" {
			return nil, invalidToken("cnf without jkt")
		}
		t.JKT = c.Cnf.JKT
	}
	if c.Scope != "" {
		t.Scopes = strings.Fields(c.Scope)
		t.scopes = make(broker.Scopes, 0, len(t.Scopes))
		for _, s := range t.Scopes {
			sc, err := broker.ParseScope(s)
			if err != nil {
				return nil, invalidToken("the token carries a malformed scope")
			}
			t.scopes = append(t.scopes, sc)
		}
	}
	return t, nil
}

// tokenProblem is a short description of a golang-jwt refusal, naming no
// internals.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, gojwt.ErrTokenExpired):
		return "the token expired"
	case errors.Is(err, gojwt.ErrTokenNotValidYet), errors.Is(err, gojwt.ErrTokenUsedBeforeIssued):
		return "the token is not valid yet"
	case errors.Is(err, gojwt.ErrTokenInvalidAudience):
		return "the token is not for this resource server"
	case errors.Is(err, gojwt.ErrTokenInvalidIssuer):
		return "the token is not Errand's"
	case errors.Is(err, gojwt.ErrTokenSignatureInvalid):
		return "the token's signature is invalid"
	default:
		return "the token is malformed"
	}
}

// parseHeader decodes and checks the JOSE header before any key is looked
// up: typ at+jwt, no crit, an algorithm Errand signs with.
func parseHeader(raw string) (header, error) {
	var h header
	dot := strings.IndexByte(raw, '.')
	if dot < 0 || strings.Count(raw, ".") != 2 {
		return h, invalidToken("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(raw[:dot])
	if err != nil {
		return h, invalidToken("malformed header")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&h); err != nil {
		return h, invalidToken("malformed header")
	}
	if h.Crit != nil {
		return h, invalidToken("crit header not supported")
	}
	if h.Typ != TokenType {
		return h, invalidToken("typ must be " + TokenType)
	}
	if _, ok := algorithms[h.Alg]; !ok {
		return h, invalidToken("unsupported algorithm")
	}
	return h, nil
}

// checkBinding holds a bound token to its DPoP proof (RFC 9449 §7.1) and
// refuses the DPoP scheme for a bearer token.
func (v *Verifier) checkBinding(ctx context.Context, r *http.Request, t *Token, scheme string) error {
	if t.JKT == "" {
		if scheme == "DPoP" {
			return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "a bearer token is sent with the Bearer scheme", DPoP: true}
		}
		return nil
	}
	if scheme != "DPoP" {
		return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "the token is DPoP-bound: send it with the DPoP scheme and a proof", DPoP: true}
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return &Error{Status: http.StatusUnauthorized, Code: "invalid_dpop_proof", Description: "exactly one DPoP proof is required", DPoP: true}
	}
	req := dpop.Request{Method: r.Method, URL: v.public + r.URL.EscapedPath(), AccessToken: t.Raw}
	if _, err := v.dpop.VerifyBound(ctx, proofs[0], req, t.JKT); err != nil {
		if errors.Is(err, dpop.ErrInvalidProof) {
			return &Error{Status: http.StatusUnauthorized, Code: "invalid_dpop_proof", Description: "the DPoP proof is invalid", DPoP: true}
		}
		return unavailable("cannot check the DPoP proof")
	}
	return nil
}

// checkRevocation refuses a token the feed names, and, past the feed's
// bound, every token (or asks introspection).
func (v *Verifier) checkRevocation(ctx context.Context, t *Token) error {
	v.mu.RLock()
	_, revoked := v.revoked[t.JTI]
	v.mu.RUnlock()
	if revoked {
		return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "the token was revoked", DPoP: t.JKT != ""}
	}
	if v.Current() {
		return nil
	}
	if !v.cfg.Introspect {
		return unavailable("the revocation feed is unavailable")
	}
	return v.introspect(ctx, t)
}

// Current reports whether the revocation feed is within its bound.
func (v *Verifier) Current() bool {
	return v.cfg.Now().UnixNano() < v.freshUntil.Load()
}

// Ready waits until the feed was first read (or ctx ends).
func (v *Verifier) Ready(ctx context.Context) error {
	select {
	case <-v.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
