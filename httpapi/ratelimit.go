package httpapi

import (
	"container/list"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
)

// RateLimits bounds how fast one principal, and one network peer, may call
// the v1 API. Zero fields take the defaults; rate.Inf disables a limit.
type RateLimits struct {
	// PerPrincipal is requests per second per (kind, issuer, subject),
	// with a burst of twice that. Default 50.
	PerPrincipal rate.Limit
	// PerAddress is requests per second per client address, burst twice
	// that; default 200, rate.Inf turns it off (when a front proxy limits).
	// It is charged only by requests that present no credential or fail
	// authentication: an authenticated principal is never refused because
	// of anonymous traffic, wherever it comes from.
	PerAddress rate.Limit
	// TrustedProxies are the peers whose X-Forwarded-For is believed: from
	// them the client is the rightmost address of the header that is not
	// itself a trusted proxy. From any other peer the client is the TCP
	// peer, and X-Forwarded-For and X-Real-IP are never read, so a client
	// cannot reset its bucket by rotating a header.
	TrustedProxies []netip.Prefix
}

func (l *RateLimits) defaults() {
	if l.PerPrincipal == 0 {
		l.PerPrincipal = 50
	}
	if l.PerAddress == 0 {
		l.PerAddress = 200
	}
}

// limiters is a set of token buckets keyed by a string, forgetting keys
// idle for ten minutes and, when full, the least recently used: a full
// table never refuses a key it has not seen (a flood of new addresses
// would otherwise lock every new client out). Evicting resets only the
// bucket of a key idle longer than every other.
type limiters struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     *list.List               // most recently used first
}

type bucket struct {
	key  string
	lim  *rate.Limiter
	seen time.Time
}

const (
	maxBuckets = 100_000
	bucketIdle = 10 * time.Minute
)

func newLimiters(l rate.Limit) *limiters {
	burst := int(2 * l)
	if l == rate.Inf || burst < 1 {
		burst = 1
	}
	return &limiters{limit: l, burst: burst, max: maxBuckets, buckets: map[string]*list.Element{}, lru: list.New()}
}

// allow takes a token from key's bucket; when it is empty it returns how
// long until one is back.
func (ls *limiters) allow(key string) (bool, time.Duration) {
	if ls.limit == rate.Inf {
		return true, 0
	}
	now := time.Now()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	// The idle, from the least recently used end: O(what is dropped).
	for e := ls.lru.Back(); e != nil && now.Sub(e.Value.(*bucket).seen) > bucketIdle; e = ls.lru.Back() {
		ls.drop(e)
	}
	var b *bucket
	if e := ls.buckets[key]; e != nil {
		b = e.Value.(*bucket)
		ls.lru.MoveToFront(e)
	} else {
		if len(ls.buckets) >= ls.max {
			ls.drop(ls.lru.Back())
		}
		b = &bucket{key: key, lim: rate.NewLimiter(ls.limit, ls.burst)}
		ls.buckets[key] = ls.lru.PushFront(b)
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (ls *limiters) drop(e *list.Element) {
	delete(ls.buckets, e.Value.(*bucket).key)
	ls.lru.Remove(e)
}

// throttled is a refusal by a rate limiter. It is answered 429 and counted,
// but not written to the audit chain one by one: flooding the audit log is
// exactly what the limiter exists to stop.
type throttled struct {
	retry time.Duration
	err   error
}

func (e *throttled) Error() string { return e.err.Error() }
func (e *throttled) Unwrap() error { return e.err }

func (s *Server) throttle(key string, ls *limiters) error {
	if ok, d := ls.allow(key); !ok {
		return &throttled{retry: d, err: broker.Errorf(broker.ErrRateLimited, "too many requests; retry later")}
	}
	return nil
}

// Throttle charges p's per-principal bucket as an authenticated API
// request does, for requests that authenticate otherwise (the approval
// pages' sessions): a rate_limited refusal (429, answered by Refuse with
// its Retry-After) once the bucket is empty.
func (s *Server) Throttle(p broker.Principal) error {
	return s.throttle(string(p.Kind)+"\x00"+p.Issuer+"\x00"+p.Subject, s.byPrincipal)
}

// ThrottleAddress charges r, a request with no credential, to its client
// address's bucket, as every anonymous API request is (the same limiter,
// the same trusted proxies): ErrRateLimited when that address is over its
// rate. For routes served outside the API, such as the sign-in's.
func (s *Server) ThrottleAddress(r *http.Request) error {
	return s.throttle(s.addressKey(r), s.byAddress)
}

// limitAddress applies the per-address limit. A request without a
// credential is charged here, before any work; one with a credential is
// charged only if it fails authentication (see authenticate), so that
// anonymous traffic sharing an address (a proxy, a NAT) never locks an
// authenticated principal out.
func (s *Server) limitAddress(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := s.addressKey(r)
		if r.Header.Get("Authorization") != "" {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), addressCtxKey{}, key)))
			return
		}
		if err := s.throttle(key, s.byAddress); err != nil {
			s.refuse(w, r, broker.Principal{}, "", err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

type addressCtxKey struct{}

// chargeFailedAuth charges the address of a request whose credential
// failed: a refusal once the address's bucket is empty.
func (s *Server) chargeFailedAuth(r *http.Request, authErr error) error {
	key, ok := r.Context().Value(addressCtxKey{}).(string)
	if code := broker.CodeOf(authErr); !ok || (code != broker.ErrInvalidToken.Code && code != broker.ErrTokenNotAccepted.Code) {
		return authErr // an outage is not the caller's failure
	}
	if err := s.throttle(key, s.byAddress); err != nil {
		return err
	}
	return authErr
}

func retryAfter(err error) (string, bool) {
	var t *throttled
	if !errors.As(err, &t) {
		return "", false
	}
	secs := int(t.retry/time.Second) + 1
	return itoa(secs), true
}

func itoa(n int) string {
	if n <= 0 {
		return "1"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// addressKey is the rate-limit key of r's client (see clientAddr): its
// IPv4 address, or its IPv6 /64 (one host commonly holds a whole /64).
func (s *Server) addressKey(r *http.Request) string {
	a := s.clientAddr(r)
	if !a.IsValid() {
		return r.RemoteAddr
	}
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// clientAddr is the address of r's client: the TCP peer, unless the peer
// is a trusted proxy; then the rightmost address of X-Forwarded-For that
// is not a trusted proxy (every proxy appends the address it received
// from, so the entries left of the first untrusted one are the client's
// own words). An unparseable entry ends the walk at the last trusted hop.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !s.trustedProxy(peer) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseAddr(strings.TrimSpace(hops[i]))
		if !a.IsValid() {
			return peer
		}
		if !s.trustedProxy(a) {
			return a
		}
		peer = a
	}
	return peer
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr reads "ip", "ip:port" or "[ipv6]:port"; IPv4-mapped IPv6
// addresses are read as IPv4.
func parseAddr(v string) netip.Addr {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}
