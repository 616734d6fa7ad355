package identity

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/errandhq/errand/broker"
)

// SPIFFE makes an issuer a SPIFFE trust domain: its tokens are JWT-SVIDs,
// verified with go-spiffe against the trust domain's JWT bundle. Exactly
// one bundle source is set.
type SPIFFE struct {
	TrustDomain string
	// EndpointURL is a SPIFFE bundle endpoint. With EndpointSPIFFEID set it
	// is authenticated with the https_spiffe profile (the endpoint's
	// X.509-SVID, checked against the trust domain's own X.509 authorities:
	// first those of BootstrapFile, then those of the last bundle fetched);
	// otherwise with https_web (Web PKI; EndpointRoots replaces the system
	// roots).
	EndpointURL      string
	EndpointSPIFFEID string
	EndpointRoots    *x509.CertPool
	// EndpointCAFile is a PEM file of roots for an https_web endpoint
	// (added to EndpointRoots).
	EndpointCAFile string
	BootstrapFile  string
	// OIDCDiscoveryURL is SPIRE's OIDC discovery provider (its base URL or
	// its /.well-known/openid-configuration); its JWKS is the JWT bundle.
	OIDCDiscoveryURL string
	// File is a SPIFFE bundle (JWKS with jwt-svid keys) on disk, read again
	// whenever it changes (spire-server bundle show -format spiffe).
	File string
	// WorkloadAPISocket is the SPIFFE Workload API's unix socket path; the
	// bundle is pushed by the agent as it rotates.
	WorkloadAPISocket string
	// RefreshEvery bounds how long a fetched HTTP bundle is used before it
	// is fetched again (the bundle's refresh_hint when shorter); default 5 min.
	RefreshEvery time.Duration
	// X509SVID accepts the trust domain's X.509-SVIDs as client
	// certificates of mutual TLS (VerifyX509SVID), checked against the
	// bundle's X.509 authorities.
	X509SVID bool
}

// DefaultBundleRefresh is how often an HTTP bundle source is fetched again
// when the bundle names no shorter refresh_hint.
const DefaultBundleRefresh = 5 * time.Minute

// SPIFFEIssuerURL is the issuer URL of a SPIFFE trust domain: the
// principal of a JWT-SVID is (SPIFFEIssuerURL(td), SPIFFE ID, kind).
func SPIFFEIssuerURL(td string) string { return "spiffe://" + td }

// bundleSource yields a trust domain's current JWT bundle.
type bundleSource interface {
	// current is the bundle to verify with now.
	current(ctx context.Context) (*jwtbundle.Bundle, error)
	// unknownKey is called when a token names a key the current bundle
	// lacks: the source may fetch again (bounded by a cool-down).
	unknownKey(ctx context.Context) (*jwtbundle.Bundle, error)
	// x509 is the trust domain's current X.509 authorities.
	x509(ctx context.Context) (*x509bundle.Bundle, error)
	close()
}

type spiffeTrust struct {
	td       spiffeid.TrustDomain
	src      bundleSource
	subjects []spiffePattern
	x509     bool
}

// newSPIFFE validates an issuer's SPIFFE settings and builds its source.
func newSPIFFE(s *SPIFFE, client *http.Client, now func() time.Time, cool time.Duration) (*spiffeTrust, error) {
	td, err := spiffeid.TrustDomainFromString(s.TrustDomain)
	if err != nil || s.TrustDomain != td.Name() {
		return nil, fmt.Errorf("spiffe.trust_domain: %q is not a trust domain name (lower case, no scheme, no path)", s.TrustDomain)
	}
	n := 0
	for _, v := range []string{s.EndpointURL, s.OIDCDiscoveryURL, s.File, s.WorkloadAPISocket} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("spiffe.bundle: exactly one of endpoint_url, oidc_discovery_url, file, workload_api_socket")
	}
	every := s.RefreshEvery
	if every <= 0 {
		every = DefaultBundleRefresh
	}
	t := &spiffeTrust{td: td, x509: s.X509SVID}
	switch {
	case s.File != "":
		t.src = &fileSource{td: td, path: s.File}
	case s.WorkloadAPISocket != "":
		t.src = &workloadSource{td: td, addr: "unix://" + s.WorkloadAPISocket, x: &workloadX509{td: td, addr: "unix://" + s.WorkloadAPISocket}}
	case s.OIDCDiscoveryURL != "":
		if !strings.HasPrefix(s.OIDCDiscoveryURL, "https://") && !strings.HasPrefix(s.OIDCDiscoveryURL, "http://") {
			return nil, errors.New("spiffe.bundle.oidc_discovery_url: must be an http(s) URL")
		}
		u := s.OIDCDiscoveryURL
		if !strings.HasSuffix(u, "/.well-known/openid-configuration") {
			u = strings.TrimSuffix(u, "/") + "/.well-known/openid-configuration"
		}
		t.src = &httpSource{every: every, cool: cool, now: now, fetch: func(ctx context.Context) (*spiffebundle.Bundle, time.Duration, error) {
			return fetchOIDCBundle(ctx, client, td, u)
		}}
	case s.EndpointURL != "":
		if !strings.HasPrefix(s.EndpointURL, "https://") {
			return nil, errors.New("spiffe.bundle.endpoint_url: must be an https URL (https_web or https_spiffe profile)")
		}
		ep := &endpointSource{td: td, url: s.EndpointURL, roots: s.EndpointRoots}
		if s.EndpointCAFile != "" {
			pem, err := os.ReadFile(s.EndpointCAFile)
			if err != nil {
				return nil, fmt.Errorf("spiffe.bundle.ca_file: %v", err)
			}
			if ep.roots == nil {
				ep.roots = x509.NewCertPool()
			}
			if !ep.roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("spiffe.bundle.ca_file: %s holds no PEM certificate", s.EndpointCAFile)
			}
		}
		if s.EndpointSPIFFEID != "" {
			id, err := spiffeid.FromString(s.EndpointSPIFFEID)
			if err != nil {
				return nil, fmt.Errorf("spiffe.bundle.endpoint_spiffe_id: %v", err)
			}
			if s.BootstrapFile == "" {
				return nil, errors.New("spiffe.bundle: endpoint_spiffe_id (https_spiffe) needs bootstrap_file, the trust domain's bundle to authenticate the endpoint with first")
			}
			ep.spiffeID, ep.bootstrap = id, s.BootstrapFile
		}
		t.src = &httpSource{every: every, cool: cool, now: now, fetch: ep.fetch}
	}
	return t, nil
}

// verifySPIFFE verifies a JWT-SVID of trust domain t with go-spiffe's
// jwtsvid.ParseAndValidate: signature by a key of the trust domain's
// current bundle, exp, nbf, the audience, and the sub a SPIFFE ID of this
// trust domain. Errand adds its own rules: one audience, a pinned
// algorithm, a bounded lifetime, and the issuer's subject patterns.
func (v *Verifier) verifySPIFFE(ctx context.Context, t *trusted, hdr header, raw string) (broker.Principal, time.Time, error) {
	fail := func(format string, a ...any) (broker.Principal, time.Time, error) {
		return broker.Principal{}, time.Time{}, broker.Errorf(broker.ErrInvalidToken, format, a...)
	}
	if !pinned(t.cfg.Algorithms, hdr.Alg) {
		return fail("signing algorithm not accepted for this issuer")
	}
	if hdr.Kid == "" {
		return fail("a JWT-SVID must name its key (kid)")
	}
	b, err := t.spiffe.src.current(ctx)
	if err != nil {
		return broker.Principal{}, time.Time{}, fmt.Errorf("%w: bundle of trust domain %s: %v", broker.ErrUnavailable, t.spiffe.td.Name(), err)
	}
	if !b.HasJWTAuthority(hdr.Kid) {
		if b, err = t.spiffe.src.unknownKey(ctx); err != nil {
			return broker.Principal{}, time.Time{}, fmt.Errorf("%w: bundle of trust domain %s: %v", broker.ErrUnavailable, t.spiffe.td.Name(), err)
		}
	}
	svid, err := jwtsvid.ParseAndValidate(raw, b, []string{t.cfg.Audience})
	if err != nil {
		return fail("%s", svidFailure(err))
	}
	if svid.ID.TrustDomain() != t.spiffe.td {
		return fail("SPIFFE ID not of the issuer's trust domain")
	}
	// A token for several audiences could be replayed by each of them at
	// Errand: a JWT-SVID presented here names Errand alone.
	if len(svid.Audience) != 1 {
		return fail("a JWT-SVID presented to Errand must name one audience, %q", t.cfg.Audience)
	}
	now := v.now()
	iat, hasIat := numericClaim(svid.Claims["iat"])
	if hasIat && iat.After(now.Add(time.Minute)) {
		return fail("iat is in the future")
	}
	start := now
	if hasIat {
		start = iat
	}
	if svid.Expiry.Sub(start) > t.cfg.MaxLifetime {
		return fail("token lifetime longer than %s", t.cfg.MaxLifetime)
	}
	id := svid.ID.String()
	if len(id) > 255 {
		return fail("SPIFFE ID longer than 255 bytes")
	}
	if !spiffeSubjectAllowed(t.spiffe.subjects, svid.ID) {
		return fail("subject not allowed for this issuer")
	}
	return broker.Principal{Issuer: t.cfg.URL, Subject: id, Kind: t.cfg.Kind}, svid.Expiry, nil
}

// VerifyX509SVID authenticates the client certificate chain of a mutual
// TLS connection (leaf first, as presented: not verified by TLS) as an
// X.509-SVID of a trust domain configured with X509SVID, with go-spiffe's
// x509svid.Verify against the trust domain's X.509 authorities. The
// principal is the same as the workload's JWT-SVID would give.
func (v *Verifier) VerifyX509SVID(ctx context.Context, chain []*x509.Certificate) (broker.Principal, error) {
	fail := func(format string, a ...any) (broker.Principal, error) {
		return broker.Principal{}, broker.Errorf(broker.ErrInvalidToken, format, a...)
	}
	if len(chain) == 0 || len(chain) > 8 {
		return fail("a client certificate chain of 1 to 8 certificates is required")
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return fail("the client certificate is not an X.509-SVID")
	}
	t, ok := v.byTD[id.TrustDomain().Name()]
	if !ok || !t.spiffe.x509 {
		return fail("untrusted trust domain for X.509-SVIDs")
	}
	b, err := t.spiffe.src.x509(ctx)
	if err != nil {
		return broker.Principal{}, fmt.Errorf("%w: X.509 bundle of trust domain %s: %v", broker.ErrUnavailable, t.spiffe.td.Name(), err)
	}
	if len(b.X509Authorities()) == 0 {
		return fail("the trust domain's bundle holds no X.509 authorities")
	}
	got, _, err := x509svid.Verify(chain, b, x509svid.WithTime(v.now()))
	if err != nil || got != id {
		return fail("the client certificate does not verify with the trust domain's X.509 authorities")
	}
	if len(id.String()) > 255 {
		return fail("SPIFFE ID longer than 255 bytes")
	}
	if !spiffeSubjectAllowed(t.spiffe.subjects, id) {
		return fail("subject not allowed for this issuer")
	}
	return broker.Principal{Issuer: t.cfg.URL, Subject: id.String(), Kind: t.cfg.Kind}, nil
}

func pinned(algs []string, alg string) bool {
	for _, a := range algs {
		if a == alg {
			return true
		}
	}
	return false
}

func numericClaim(v any) (time.Time, bool) {
	switch n := v.(type) {
	case float64:
		return time.Unix(int64(n), 0), true
	case json.Number:
		f, err := n.Float64()
		return time.Unix(int64(f), 0), err == nil
	}
	return time.Time{}, false
}

// svidFailure is the detail of a JWT-SVID that go-spiffe refused, from a
// fixed list: go-spiffe's messages quote the token's audience and trust
// domain, the unverified caller's words (H03).
func svidFailure(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "expired"):
		return "token expired"
	case strings.Contains(msg, "expected audience"):
		return "token not issued for Errand's audience"
	case strings.Contains(msg, "nbf"), strings.Contains(msg, "not valid yet"):
		return "token not yet valid"
	case strings.Contains(msg, "issued in the future"), strings.Contains(msg, "iat"):
		return "iat is in the future"
	case strings.Contains(msg, "no bundle found"):
		return "SPIFFE ID not of the issuer's trust domain"
	case strings.Contains(msg, "invalid subject"), strings.Contains(msg, "missing subject"):
		return "sub is not a valid SPIFFE ID"
	case strings.Contains(msg, "missing exp"):
		return "exp is required"
	case strings.Contains(msg, "header type"):
		return "token type not accepted for a JWT-SVID"
	case strings.Contains(msg, "no JWT authority"), strings.Contains(msg, "unable to get claims"), strings.Contains(msg, "key id"):
		return "signature does not verify with the trust domain's bundle"
	case strings.Contains(msg, "unable to parse"):
		return "malformed token"
	}
	return "JWT-SVID refused by its trust domain's verification"
}

// spiffePattern is a SPIFFE ID pattern of an issuer's subjects: the path's
// segments are literals, `*` (exactly one segment) or a final `**` (one or
// more further segments), as in Errand's scopes.
type spiffePattern []string

// parseSPIFFEPattern parses p, a pattern of trust domain td.
func parseSPIFFEPattern(td spiffeid.TrustDomain, p string) (spiffePattern, error) {
	prefix := SPIFFEIssuerURL(td.Name()) + "/"
	if !strings.HasPrefix(p, prefix) {
		return nil, fmt.Errorf("%q is not a SPIFFE ID pattern of trust domain %s (spiffe://%s/...)", p, td.Name(), td.Name())
	}
	segs := strings.Split(strings.TrimPrefix(p, prefix), "/")
	for i, s := range segs {
		switch {
		case s == "**":
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%q: ** may only be the last segment", p)
			}
		case s == "*":
		default:
			// A literal segment must be a valid SPIFFE ID path segment.
			if err := spiffeid.ValidatePathSegment(s); err != nil {
				return nil, fmt.Errorf("%q: segment %q: %v", p, s, err)
			}
		}
	}
	return segs, nil
}

func (p spiffePattern) match(id spiffeid.ID) bool {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if id.Path() == "" {
		segs = nil
	}
	for i, s := range p {
		if s == "**" {
			return len(segs) > i
		}
		if i >= len(segs) || (s != "*" && s != segs[i]) {
			return false
		}
	}
	return len(segs) == len(p)
}

func spiffeSubjectAllowed(patterns []spiffePattern, id spiffeid.ID) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if p.match(id) {
			return true
		}
	}
	return false
}

// fileSource reads a SPIFFE bundle file again whenever its size or
// modification time changes, so that a rotation written to it (a new key
// added, an old one removed) takes effect on the next verification.
type fileSource struct {
	td   spiffeid.TrustDomain
	path string

	mu    sync.Mutex
	stamp string
	b     *spiffebundle.Bundle
}

func (f *fileSource) current(ctx context.Context) (*jwtbundle.Bundle, error) {
	b, err := f.bundle()
	if err != nil {
		return nil, err
	}
	return b.JWTBundle(), nil
}

func (f *fileSource) x509(context.Context) (*x509bundle.Bundle, error) {
	b, err := f.bundle()
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}

func (f *fileSource) bundle() (*spiffebundle.Bundle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("bundle file: %w", err)
	}
	stamp := fmt.Sprintf("%d/%d", st.Size(), st.ModTime().UnixNano())
	if f.b != nil && stamp == f.stamp {
		return f.b, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("bundle file: %w", err)
	}
	sb, err := spiffebundle.Parse(f.td, data)
	if err != nil {
		// A file caught half-written is read again on the next call; a
		// broken file never leaves the old keys in force.
		return nil, fmt.Errorf("bundle file %s: %v", f.path, err)
	}
	f.b, f.stamp = sb, stamp
	return f.b, nil
}

func (f *fileSource) unknownKey(ctx context.Context) (*jwtbundle.Bundle, error) {
	return f.current(ctx)
}

func (f *fileSource) close() {}

// httpSource caches a bundle fetched over HTTP: fetched again when older
// than its refresh period, and on an unknown key at most once per
// cool-down, so a flood of random kids cannot hammer the endpoint.
type httpSource struct {
	fetch func(ctx context.Context) (*spiffebundle.Bundle, time.Duration, error)
	every time.Duration
	cool  time.Duration
	now   func() time.Time

	fetchMu sync.Mutex
	mu      sync.Mutex
	b       *spiffebundle.Bundle
	hint    time.Duration
	last    time.Time // of the last attempt
	good    time.Time // of the last success
	lastErr error
	fetches int
}

func (h *httpSource) current(ctx context.Context) (*jwtbundle.Bundle, error) {
	b, err := h.bundle(ctx)
	if err != nil {
		return nil, err
	}
	return b.JWTBundle(), nil
}

func (h *httpSource) x509(ctx context.Context) (*x509bundle.Bundle, error) {
	b, err := h.bundle(ctx)
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}

func (h *httpSource) bundle(ctx context.Context) (*spiffebundle.Bundle, error) {
	h.mu.Lock()
	b, last, every := h.b, h.last, h.every
	if h.hint > 0 && h.hint < every {
		every = h.hint
	}
	h.mu.Unlock()
	if b != nil && h.now().Sub(last) < every {
		return b, nil
	}
	return h.refetch(ctx, every)
}

// staleLimit is how many refresh periods a bundle stays in use while its
// source cannot be reached: keys removed meanwhile could not be learnt of.
const staleLimit = 3

func (h *httpSource) unknownKey(ctx context.Context) (*jwtbundle.Bundle, error) {
	b, err := h.refetch(ctx, h.cool)
	if err != nil {
		return nil, err
	}
	return b.JWTBundle(), nil
}

// refetch fetches unless the last fetch is younger than wait (failRetry
// after a failure). On failure the last good bundle stays in use until
// its refresh period has passed staleLimit times, then the source is
// unavailable.
func (h *httpSource) refetch(ctx context.Context, wait time.Duration) (*spiffebundle.Bundle, error) {
	h.fetchMu.Lock()
	defer h.fetchMu.Unlock()
	h.mu.Lock()
	if h.lastErr != nil {
		wait = min(wait, failRetry)
	}
	if !h.last.IsZero() && h.now().Sub(h.last) < wait {
		b, err := h.usable()
		h.mu.Unlock()
		return b, err
	}
	h.last = h.now()
	h.fetches++
	h.mu.Unlock()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b, hint, err := h.fetch(fctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
	if err != nil {
		return h.usable()
	}
	h.b, h.hint, h.good = b, hint, h.now()
	return b, nil
}

// usable is the last good bundle while it is younger than staleLimit
// refresh periods, else the last fetch's error. h.mu is held.
func (h *httpSource) usable() (*spiffebundle.Bundle, error) {
	if h.b != nil && h.now().Sub(h.good) < staleLimit*h.every {
		return h.b, nil
	}
	if h.lastErr == nil {
		return h.b, nil
	}
	return nil, h.lastErr
}

// Fetches counts fetches, for tests.
func (h *httpSource) Fetches() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fetches
}

func (h *httpSource) close() {}

// endpointSource fetches a SPIFFE bundle endpoint with go-spiffe's
// federation client.
type endpointSource struct {
	td        spiffeid.TrustDomain
	url       string
	roots     *x509.CertPool
	spiffeID  spiffeid.ID
	bootstrap string

	mu   sync.Mutex
	x509 *x509bundle.Bundle // https_spiffe: the trust anchors to authenticate the endpoint
}

func (e *endpointSource) fetch(ctx context.Context) (*spiffebundle.Bundle, time.Duration, error) {
	var opts []federation.FetchOption
	if !e.spiffeID.IsZero() {
		e.mu.Lock()
		anchors := e.x509
		e.mu.Unlock()
		if anchors == nil {
			sb, err := spiffebundle.Load(e.td, e.bootstrap)
			if err != nil {
				return nil, 0, fmt.Errorf("bootstrap bundle: %v", err)
			}
			anchors = sb.X509Bundle()
		}
		opts = append(opts, federation.WithSPIFFEAuth(anchors, e.spiffeID))
	} else if e.roots != nil {
		opts = append(opts, federation.WithWebPKIRoots(e.roots))
	}
	sb, err := federation.FetchBundle(ctx, e.td, e.url, opts...)
	if err != nil {
		return nil, 0, err
	}
	if !e.spiffeID.IsZero() && len(sb.X509Authorities()) > 0 {
		e.mu.Lock()
		e.x509 = sb.X509Bundle()
		e.mu.Unlock()
	}
	hint, _ := sb.RefreshHint()
	return sb, hint, nil
}

// fetchOIDCBundle reads an OIDC discovery document and its JWKS (SPIRE's
// OIDC discovery provider) into a JWT bundle of td.
func fetchOIDCBundle(ctx context.Context, c *http.Client, td spiffeid.TrustDomain, discovery string) (*spiffebundle.Bundle, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, discovery, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("discovery: %s answered %s", discovery, resp.Status)
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil || meta.JWKSURI == "" {
		return nil, 0, fmt.Errorf("discovery: %s has no jwks_uri", discovery)
	}
	keys, err := fetchJWKS(ctx, c, meta.JWKSURI)
	if err != nil {
		return nil, 0, err
	}
	auth := map[string]crypto.PublicKey{}
	for _, k := range keys {
		if k.KeyID != "" && k.Algorithm != string(jose.HS256) {
			auth[k.KeyID] = k.Key
		}
	}
	// An OIDC JWKS has JWT keys only: no X.509 authorities.
	return spiffebundle.FromJWTAuthorities(td, auth), 0, nil
}

// workloadSource follows the trust domain's JWT bundle over the SPIFFE
// Workload API: the agent pushes every change, so a key removed from the
// bundle is refused as soon as the agent has sent the new bundle. The
// stream is opened in the background on first use, so Errand starts, and
// answers 503 at once rather than hang, while the agent is down.
type workloadSource struct {
	td   spiffeid.TrustDomain
	addr string
	x    *workloadX509
	// wait bounds how long a verification waits for the first bundle.
	wait time.Duration

	once   sync.Once
	ready  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	src    *workloadapi.JWTSource
	closed bool
}

func (w *workloadSource) start() {
	w.once.Do(func() {
		w.ready = make(chan struct{})
		w.ctx, w.cancel = context.WithCancel(context.Background())
		go func() {
			// Blocks until the agent has sent the first bundles, retrying
			// the connection with go-spiffe's backoff, or until close.
			src, err := workloadapi.NewJWTSource(w.ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(w.addr)))
			if err != nil {
				return
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.closed {
				_ = src.Close()
				return
			}
			w.src = src
			close(w.ready)
		}()
	})
}

func (w *workloadSource) current(ctx context.Context) (*jwtbundle.Bundle, error) {
	w.start()
	wait := w.wait
	if wait <= 0 {
		wait = 3 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.ready:
	case <-t.C:
		return nil, fmt.Errorf("workload API %s: no bundle received yet", w.addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	w.mu.Lock()
	src := w.src
	w.mu.Unlock()
	if src == nil {
		return nil, fmt.Errorf("workload API %s: closed", w.addr)
	}
	return src.GetJWTBundleForTrustDomain(w.td)
}

func (w *workloadSource) unknownKey(ctx context.Context) (*jwtbundle.Bundle, error) {
	return w.current(ctx)
}

func (w *workloadSource) x509(ctx context.Context) (*x509bundle.Bundle, error) {
	return w.x.get(ctx)
}

// workloadX509 follows the trust domain's X.509 authorities over the
// Workload API (FetchX509Bundles), opened on the first X.509-SVID
// presented.
type workloadX509 struct {
	td   spiffeid.TrustDomain
	addr string

	once   sync.Once
	ready  chan struct{}
	cancel context.CancelFunc
	mu     sync.Mutex
	set    *x509bundle.Set
	closed bool
}

func (x *workloadX509) OnX509BundlesUpdate(s *x509bundle.Set) {
	x.mu.Lock()
	first := x.set == nil
	x.set = s
	x.mu.Unlock()
	if first {
		close(x.ready)
	}
}

func (x *workloadX509) OnX509BundlesWatchError(error) {}

func (x *workloadX509) get(ctx context.Context) (*x509bundle.Bundle, error) {
	x.once.Do(func() {
		x.ready = make(chan struct{})
		var wctx context.Context
		wctx, x.cancel = context.WithCancel(context.Background())
		x.mu.Lock()
		closed := x.closed
		x.mu.Unlock()
		if closed {
			return
		}
		go func() {
			c, err := workloadapi.New(wctx, workloadapi.WithAddr(x.addr))
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.WatchX509Bundles(wctx, x)
		}()
	})
	t := time.NewTimer(3 * time.Second)
	defer t.Stop()
	select {
	case <-x.ready:
	case <-t.C:
		return nil, fmt.Errorf("workload API %s: no X.509 bundle received yet", x.addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.set.GetX509BundleForTrustDomain(x.td)
}

func (x *workloadX509) close() {
	x.mu.Lock()
	x.closed = true
	x.mu.Unlock()
	if x.cancel != nil {
		x.cancel()
	}
}

func (w *workloadSource) close() {
	w.x.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.cancel != nil {
		w.cancel()
	}
	if w.src != nil {
		_ = w.src.Close()
		w.src = nil
	}
}

// Close stops the background work of the verifier's bundle sources (the
// Workload API streams).
func (v *Verifier) Close() {
	for _, t := range v.issuers {
		if t.spiffe != nil {
			t.spiffe.src.close()
		}
	}
}
