package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/dpop"
	"github.com/errandhq/errand/internal/strictjson"
)

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 64 << 10

// Authenticator verifies a bearer token (identity.Verifier).
type Authenticator interface {
	Verify(ctx context.Context, raw string) (broker.Principal, error)
}

// Config configures a Server.
type Config struct {
	Service *broker.Service
	Auth    Authenticator
	// PublicURL is Errand's issuer URL.
	PublicURL string
	// JWKS returns the current JSON Web Key Set.
	JWKS func() []byte
	// UserIssuers decides how on_behalf_of is written back: a bare sub
	// with one user issuer, <issuer>#<sub> with several.
	UserIssuers []string
	// CursorKey authenticates pagination cursors.
	CursorKey []byte
	Logger    *slog.Logger
	// Registerer receives the metrics; default a new registry.
	Registry *prometheus.Registry
	// RequestTimeout bounds each request's work; default 15 s.
	RequestTimeout time.Duration
	// RateLimits bound request rates per principal and per peer address.
	RateLimits RateLimits
	// Feed is the replica's one reader of the revocation feed, which
	// every revocation stream shares (revocation.Feed, run by its owner);
	// without it the stream answers 404 and the feed is only polled.
	Feed RevocationFeed
	// Streams caps the open revocation streams.
	Streams StreamLimits
	// DPoPNonceEvery, when positive, makes a server nonce required in
	// every DPoP proof, a new one issued this often (RFC 9449 §8).
	DPoPNonceEvery time.Duration
	// RefusalSummaryEvery is how often the refusals of callers with no
	// verified identity are chained as per-source summaries (run by
	// RunRefusalSummaries); default DefaultRefusalSummaryEvery.
	RefusalSummaryEvery time.Duration
}

// Server is Errand's HTTP API.
type Server struct {
	svc      *broker.Service
	auth     Authenticator
	self     string
	jwks     func() []byte
	users    []string
	curKey   []byte
	log      *slog.Logger
	metrics  *metrics
	registry *prometheus.Registry
	timeout  time.Duration
	router   chi.Router

	byPrincipal, byAddress *limiters
	proxies                []netip.Prefix
	feed                   RevocationFeed
	streams                *streams
	anon                   *anonRefusals
	closing                chan struct{}
	closeOnce              sync.Once
	// assertionAlgs are the signing algorithms of the client assertions
	// accepted, when the Authenticator can tell (RFC 8414 metadata).
	assertionAlgs []string
	// dpop checks DPoP proofs, their identifiers remembered in the store.
	dpop *dpop.Verifier
}

// StopStreams ends every open revocation stream (clients resume with
// Last-Event-ID), so that a graceful shutdown is not held up by them.
func (s *Server) StopStreams() { s.closeOnce.Do(func() { close(s.closing) }) }

// New builds the server and its routes.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Auth == nil || cfg.JWKS == nil || cfg.PublicURL == "" {
		return nil, errors.New("httpapi: Service, Auth, JWKS and PublicURL are required")
	}
	if len(cfg.CursorKey) < 16 {
		return nil, errors.New("httpapi: CursorKey of at least 16 bytes is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 15 * time.Second
	}
	s := &Server{
		svc: cfg.Service, auth: cfg.Auth, self: cfg.PublicURL, jwks: cfg.JWKS,
		users: cfg.UserIssuers, curKey: cfg.CursorKey, log: cfg.Logger,
		registry: cfg.Registry, timeout: cfg.RequestTimeout,
	}
	cfg.RateLimits.defaults()
	s.closing = make(chan struct{})
	s.feed = cfg.Feed
	s.byPrincipal, s.byAddress = newLimiters(cfg.RateLimits.PerPrincipal), newLimiters(cfg.RateLimits.PerAddress)
	s.proxies = cfg.RateLimits.TrustedProxies
	var err error
	dcfg := dpop.Config{Replay: dpopReplay{svc: cfg.Service}}
	if cfg.DPoPNonceEvery > 0 {
		if dcfg.Nonces, err = dpop.NewNonces(dpopNonceKey(cfg.CursorKey), cfg.DPoPNonceEvery, nil); err != nil {
			return nil, err
		}
	}
	if s.dpop, err = dpop.New(dcfg); err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, err
	}
	if s.streams, err = newStreams(cfg.Registry, cfg.Streams); err != nil {
		return nil, err
	}
	if s.anon, err = newAnonRefusals(cfg.Registry, cfg.RefusalSummaryEvery); err != nil {
		return nil, err
	}
	if a, ok := cfg.Auth.(interface{ Algorithms() []string }); ok {
		s.assertionAlgs = a.Algorithms()
	}
	s.router = s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// Router exposes the chi router, for the OpenAPI conformance test.
func (s *Server) Router() chi.Router { return s.router }

// NewHTTPServer returns an http.Server with every timeout set (an
// http.Server has none by default) and a header cap.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		// net/http allows MaxHeaderBytes plus 4 KiB of slack: 4 KiB here
		// caps the request line and headers at 8 KiB (431 beyond).
		MaxHeaderBytes: 4 << 10,
	}
}

func op(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return r.Method + " " + rc.RoutePattern()
	}
	return r.Method + " " + r.URL.Path
}

// x509Authenticator authenticates a mutual-TLS client certificate chain
// (identity.Verifier: X.509-SVIDs of SPIFFE trust domains).
type x509Authenticator interface {
	VerifyX509SVID(ctx context.Context, chain []*x509.Certificate) (broker.Principal, error)
}

// authenticate verifies the bearer token of r; without one, the client
// certificate of a mutual-TLS connection, when the authenticator takes
// X.509-SVIDs.
func (s *Server) authenticate(r *http.Request) (broker.Principal, error) {
	h := r.Header.Get("Authorization")
	var p broker.Principal
	var err error
	if xa, ok := s.auth.(x509Authenticator); ok && h == "" && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		p, err = xa.VerifyX509SVID(r.Context(), r.TLS.PeerCertificates)
	} else {
		if h == "" {
			return broker.Principal{}, broker.Errorf(broker.ErrInvalidToken, "missing Authorization header")
		}
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return broker.Principal{}, s.chargeFailedAuth(r, broker.Errorf(broker.ErrInvalidToken, "Authorization must be a Bearer token"))
		}
		p, err = s.auth.Verify(r.Context(), strings.TrimSpace(tok))
	}
	if err != nil {
		return p, s.chargeFailedAuth(r, err)
	}
	infoOf(r.Context()).set(func(ri *reqInfo) { ri.principal = string(p.Kind) + ":" + p.Ref().String() })
	return p, s.throttle(string(p.Kind)+"\x00"+p.Issuer+"\x00"+p.Subject, s.byPrincipal)
}

// decode reads one JSON object of at most MaxBodyBytes into v, refusing
// unknown fields and trailing data. An empty body decodes as {} when
// emptyOK.
func decode(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	raw, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return broker.Errorf(broker.ErrBodyTooLarge, "body larger than %d bytes", MaxBodyBytes)
		}
		return broker.Errorf(broker.ErrInvalidRequest, "cannot read body")
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		if emptyOK {
			return nil
		}
		return broker.Errorf(broker.ErrInvalidRequest, "a JSON body is required")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &statusError{status: http.StatusUnsupportedMediaType,
				err: broker.Errorf(broker.ErrInvalidRequest, "Content-Type must be application/json")}
		}
	}
	return strictjson.Decode(raw, v)
}

// cursor is an opaque, HMAC-bound keyset position: a cursor made for one
// query and one caller is refused for any other.
func (s *Server) cursor(seq int64, scope string) string {
	b := make([]byte, 8, 8+16)
	binary.BigEndian.PutUint64(b, uint64(seq))
	return base64.RawURLEncoding.EncodeToString(append(b, s.cursorMAC(b, scope)...))
}

func (s *Server) parseCursor(c, scope string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 24 || !hmac.Equal(b[8:], s.cursorMAC(b[:8], scope)) {
		return 0, broker.Errorf(broker.ErrInvalidRequest, "cursor is not valid for this query")
	}
	return int64(binary.BigEndian.Uint64(b[:8])), nil
}

func (s *Server) cursorMAC(seq []byte, scope string) []byte {
	m := hmac.New(sha256.New, s.curKey)
	m.Write(seq)
	m.Write([]byte{0})
	m.Write([]byte(scope))
	return m.Sum(nil)[:16]
}

// call is one request being served: its principal and the task id of its
// path, so that every failure is answered and audited the same way: the
// error of a broker.Service call with fail (the Service audited it), a
// refusal of the API's own with refuse.
type call struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	p    broker.Principal
	task string
	// oauth answers refusals as RFC 6749 §5.2 JSON (the RFC 7662 and
	// RFC 7009 endpoints, which stock OAuth clients call), not problem+json.
	oauth bool
}

// begin authenticates r. On failure it has answered (and audited) the
// refusal and returns nil.
func (s *Server) begin(w http.ResponseWriter, r *http.Request) *call {
	c := &call{s: s, w: w, r: r, task: chi.URLParam(r, "id")}
	p, err := s.authenticate(r)
	if err != nil {
		c.refuse(err)
		return nil
	}
	c.p = p
	return c
}

// fail answers the error of a broker.Service call, which the Service
// audited (see Server.fail).
func (c *call) fail(err error) {
	if c.oauth {
		c.s.oauthFail(c.w, c.r, c.p, err)
		return
	}
	c.s.fail(c.w, c.r, c.p, err)
}

// refuse answers and audits a refusal of the API's own (see
// Server.refuse).
func (c *call) refuse(err error) {
	if c.oauth {
		c.s.oauthRefuse(c.w, c.r, c.p, c.task, err)
		return
	}
	c.s.refuse(c.w, c.r, c.p, c.task, err)
}

// body decodes the JSON body into v; on failure it has answered.
func (c *call) body(v any, emptyOK bool) bool {
	if err := decode(c.w, c.r, v, emptyOK); err != nil {
		c.refuse(err)
		return false
	}
	return true
}
