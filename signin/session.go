package signin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
)

// Default timeouts of a session.
const (
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultAbsoluteTimeout = 8 * time.Hour
	// touchEvery bounds the writes of a busy session: its last activity
	// is recorded at most this often, so the idle timeout is exact to it.
	touchEvery = time.Minute
)

// ErrCSRF refuses a form post that does not prove it came from Errand's
// own page: no or a wrong csrf field, or a cross-site Origin or
// Sec-Fetch-Site.
var ErrCSRF = &broker.Error{Code: "csrf_failed"}

// Session is a signed-in person's session.
type Session struct {
	// ID is the opaque session id, the cookie's value. Never logged.
	ID string
	// User is the person, as the broker sees a bearer-authenticated one.
	User broker.Principal
	// CSRF is the token every form of the session carries (field csrf).
	CSRF string
	// CreatedAt is the sign-in; LastSeen the last recorded activity;
	// ExpiresAt the absolute timeout.
	CreatedAt, LastSeen, ExpiresAt time.Time
}

// LogValue keeps the session's id and CSRF token out of logs.
func (s *Session) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", s.User.Ref().String()), slog.Time("created_at", s.CreatedAt))
}

// Auditor records a refusal in the audit trail (broker.Service).
type Auditor interface {
	RecordRefusal(ctx context.Context, p broker.Principal, taskID, op string, refusal error) error
}

// Refuser audits and counts a refusal as the REST API does, and says
// the status, code and detail to answer (httpapi.Server).
type Refuser interface {
	Refuse(w http.ResponseWriter, r *http.Request, p broker.Principal, taskID string, err error) (status int, code, detail string)
}

// Config configures a Manager.
type Config struct {
	Store Store
	// PublicURL is Errand's public URL: the origin forms must come from,
	// the base of redirect URIs, and whether cookies are Secure (https).
	PublicURL string
	// Verifier verifies ID tokens as bearer tokens are (identity.Verifier).
	Verifier TokenVerifier
	// Providers are the user issuers people sign in with.
	Providers []Provider
	// IdleTimeout ends a session unused this long (default 30m);
	// AbsoluteTimeout ends it this long after sign-in (default 8h).
	IdleTimeout, AbsoluteTimeout time.Duration
	// Audit records the refusals of a verified person (a sign-out
	// without its CSRF token, a token of the wrong kind); optional.
	Audit Auditor
	// Refuser, when set, handles the refusals of callers with no verified
	// identity as the REST API does (httpapi.Server.Refuse: counted and
	// chained as periodic per-source summaries, never one audit event
	// each, so a flood of bad callbacks cannot flood the audit log);
	// without it they go to Audit too.
	Refuser Refuser
	// LimitAddress, when set, charges a sign-in start to its client
	// address (httpapi.Server.ThrottleAddress: the API's per-address
	// limiter, behind trusted proxies the client's own address), so that
	// one source flooding GET /ui/login is refused alone and never locks
	// everyone else out of signing in.
	LimitAddress func(r *http.Request) error
	// FlowsPerSecond and FlowBurst bound how fast sign-ins may be
	// started over all sources (each stores a flow until its callback or
	// expiry), so that many sources together cannot grow the flows table
	// without bound; default 500 a second, bursts of 5000.
	FlowsPerSecond float64
	FlowBurst      int
	HTTPClient     *http.Client
	Logger         *slog.Logger
	Now            func() time.Time
}

// TokenVerifier verifies an ID token (identity.Verifier).
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (broker.Principal, error)
}

// Manager keeps sessions and runs the sign-in flow.
type Manager struct {
	// limitAddress charges a sign-in start to its source (Config).
	limitAddress func(r *http.Request) error
	store        Store
	origin       string
	public       string
	secure       bool
	cookie       string
	flowName     string
	idle, abs    time.Duration
	verifier     TokenVerifier
	providers    []*provider
	audit        Auditor
	refuser      Refuser
	starts       *rate.Limiter
	client       *http.Client
	log          *slog.Logger
	now          func() time.Time
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("signin: Store is required")
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("signin: PublicURL must be an absolute http(s) URL")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.AbsoluteTimeout <= 0 {
		cfg.AbsoluteTimeout = DefaultAbsoluteTimeout
	}
	if cfg.IdleTimeout > cfg.AbsoluteTimeout {
		return nil, errors.New("signin: idle timeout longer than the absolute timeout")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FlowsPerSecond <= 0 {
		cfg.FlowsPerSecond = 500
	}
	if cfg.FlowBurst <= 0 {
		cfg.FlowBurst = 5000
	}
	m := &Manager{
		starts: rate.NewLimiter(rate.Limit(cfg.FlowsPerSecond), cfg.FlowBurst), limitAddress: cfg.LimitAddress,
		store: cfg.Store, origin: u.Scheme + "://" + u.Host, public: strings.TrimSuffix(cfg.PublicURL, "/"),
		secure: u.Scheme == "https", idle: cfg.IdleTimeout, abs: cfg.AbsoluteTimeout,
		verifier: cfg.Verifier, audit: cfg.Audit, refuser: cfg.Refuser, client: cfg.HTTPClient, log: cfg.Logger, now: cfg.Now,
	}
	// Browsers refuse a __Host- cookie without Secure, and Secure needs
	// https: over plain http (errand dev on loopback) the prefix is left off.
	m.cookie, m.flowName = "errand_session", "errand_signin"
	if m.secure {
		m.cookie, m.flowName = "__Host-errand_session", "__Host-errand_signin"
	}
	if len(cfg.Providers) > 0 && cfg.Verifier == nil {
		return nil, errors.New("signin: Verifier is required with Providers")
	}
	for i, p := range cfg.Providers {
		pv, err := newProvider(p, m.public)
		if err != nil {
			return nil, fmt.Errorf("signin: providers[%d]: %w", i, err)
		}
		m.providers = append(m.providers, pv)
	}
	return m, nil
}

// CookieName is the name of the session cookie.
func (m *Manager) CookieName() string { return m.cookie }

type ctxKey struct{}

// FromContext returns the session Middleware found for the request.
func FromContext(ctx context.Context) (*Session, bool) {
	s, ok := ctx.Value(ctxKey{}).(*Session)
	return s, ok && s != nil
}

// newID returns a random 256-bit id, base64url.
func newID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// digest is what the store keeps of an id or a state.
func digest(label, v string) string {
	h := sha256.Sum256([]byte(label + "\x00" + v))
	return hex.EncodeToString(h[:])
}

// csrfOf derives a session's CSRF token from its id: another site cannot
// read the cookie, so it cannot compute the token; the store's digest,
// made with another label, does not give it either.
func csrfOf(id string) string {
	h := sha256.Sum256([]byte("errand csrf v1\x00" + id))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Start creates a fresh session (a new id) for user and sets its cookie.
// Only people have sessions: user must be of kind user.
func (m *Manager) Start(ctx context.Context, w http.ResponseWriter, user broker.Principal) (*Session, error) {
	if user.Kind != broker.KindUser || user.Issuer == "" || user.Subject == "" {
		return nil, broker.Errorf(broker.ErrWrongPrincipalKind, "only a user signs in")
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	rec := Record{IDHash: digest("session", id), User: user, CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(m.abs)}
	if err := m.store.CreateSession(ctx, rec); err != nil {
		return nil, err
	}
	s := &Session{ID: id, User: user, CSRF: csrfOf(id), CreatedAt: now, LastSeen: now, ExpiresAt: rec.ExpiresAt}
	m.setCookie(w, m.cookie, id, int(m.abs/time.Second))
	m.log.InfoContext(ctx, "signed in", "session", s)
	return s, nil
}

func (m *Manager) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: m.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}

func (m *Manager) clearCookie(w http.ResponseWriter, name string) { m.setCookie(w, name, "", -1) }

// load returns the live session of id, ending it if it has timed out;
// broker.ErrNotFound when there is none.
func (m *Manager) load(ctx context.Context, id string) (*Session, error) {
	if id == "" || len(id) > 128 {
		return nil, broker.Errorf(broker.ErrNotFound, "no session")
	}
	h := digest("session", id)
	rec, err := m.store.Session(ctx, h)
	if err != nil {
		return nil, err
	}
	now := m.now().UTC()
	if !now.Before(rec.ExpiresAt) || !now.Before(rec.LastSeen.Add(m.idle)) {
		if err := m.store.DeleteSession(ctx, h); err != nil {
			return nil, err
		}
		return nil, broker.Errorf(broker.ErrNotFound, "session timed out")
	}
	if now.Sub(rec.LastSeen) >= touchEvery {
		if err := m.store.TouchSession(ctx, h, now); err != nil {
			return nil, err
		}
		rec.LastSeen = now
	}
	return &Session{ID: id, User: rec.User, CSRF: csrfOf(id), CreatedAt: rec.CreatedAt, LastSeen: rec.LastSeen, ExpiresAt: rec.ExpiresAt}, nil
}

// Middleware loads the session of the request's cookie, if any and alive,
// records the activity (the idle timeout runs again) and puts it in the
// request's context (FromContext). A dead session's cookie is cleared.
// When the store cannot be reached it answers 503.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(m.cookie)
		if err != nil || c.Value == "" {
			next.ServeHTTP(w, r)
			return
		}
		s, err := m.load(r.Context(), c.Value)
		switch {
		case errors.Is(err, broker.ErrNotFound):
			m.clearCookie(w, m.cookie)
			next.ServeHTTP(w, r)
		case err != nil:
			m.log.ErrorContext(r.Context(), "session store unreachable", "err", err)
			w.Header().Set("Retry-After", "5")
			http.Error(w, "Errand's database is unreachable; try again shortly.", http.StatusServiceUnavailable)
		default:
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
		}
	})
}

// Require sends a request without a session to the sign-in page, with
// the path it asked for as return_to (303; a GET's own path, the pages'
// root for any other method).
func (m *Manager) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := FromContext(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		back := "/ui/"
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if p, ok := SafeReturnTo(r.URL.RequestURI()); ok {
				back = p
			}
		}
		http.Redirect(w, r, "/ui/login?return_to="+url.QueryEscape(back), http.StatusSeeOther)
	})
}

// CheckCSRF checks that a state-changing form post comes from a page of
// the request's session: its form field csrf must equal the session's
// token (compared in constant time), and the Origin and Sec-Fetch-Site
// headers, when the browser sends them, must say same origin. It returns
// an error of code csrf_failed (ErrCSRF) otherwise.
func (m *Manager) CheckCSRF(r *http.Request) error {
	s, ok := FromContext(r.Context())
	if !ok {
		return broker.Errorf(ErrCSRF, "no session")
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return broker.Errorf(ErrCSRF, "cross-site request (Sec-Fetch-Site %s)", site)
	}
	if o := r.Header.Get("Origin"); o != "" && o != m.origin {
		return broker.Errorf(ErrCSRF, "request from another origin")
	}
	if r.PostForm == nil {
		r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			return broker.Errorf(ErrCSRF, "unreadable form")
		}
	}
	tok := r.PostForm.Get("csrf")
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.CSRF)) != 1 {
		return broker.Errorf(ErrCSRF, "missing or wrong csrf token")
	}
	return nil
}

// End ends the request's session (sign-out): deleted from the store, so
// that no replica accepts it again, and its cookie cleared.
func (m *Manager) End(ctx context.Context, w http.ResponseWriter, s *Session) error {
	m.clearCookie(w, m.cookie)
	if s == nil {
		return nil
	}
	return m.store.DeleteSession(ctx, digest("session", s.ID))
}

// RevokeUser ends every session of user, on every replica at once (for
// a person suspended or removed at the identity provider).
func (m *Manager) RevokeUser(ctx context.Context, user broker.Ref) (int, error) {
	return m.store.DeleteUserSessions(ctx, user)
}

// Sweep deletes expired sessions and flows; Run calls it periodically.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	return m.store.DeleteExpired(ctx, m.now())
}

// Run sweeps expired sessions and flows every interval until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := m.Sweep(ctx); err != nil && ctx.Err() == nil {
				m.log.WarnContext(ctx, "session sweep failed", "err", err)
			}
		}
	}
}

// SafeReturnTo accepts only a same-origin absolute path: it starts with
// one "/", not "//" or "/\" (which browsers read as another host), holds
// no control character or backslash, and parses as a bare path.
func SafeReturnTo(p string) (string, bool) {
	if p == "" || len(p) > 2048 || p[0] != '/' || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\") {
		return "", false
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return "", false
		}
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return "", false
	}
	return p, true
}
