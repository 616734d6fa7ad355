package httpapi

import (
	"errors"
	"net"
	"net/http"
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
	// PerAddress is requests per second per peer IP address, checked
	// before authentication, burst twice that. Default 200. The address is
	// the TCP peer's: X-Forwarded-For and X-Real-IP are never read, so a
	// client cannot reset its bucket by rotating a header.
	PerAddress rate.Limit
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
// idle for ten minutes.
type limiters struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const maxBuckets = 100_000

func newLimiters(l rate.Limit) *limiters {
	burst := int(2 * l)
	if l == rate.Inf || burst < 1 {
		burst = 1
	}
	return &limiters{limit: l, burst: burst, buckets: map[string]*bucket{}}
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
	if now.Sub(ls.swept) > time.Minute {
		for k, b := range ls.buckets {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(ls.buckets, k)
			}
		}
		ls.swept = now
	}
	b := ls.buckets[key]
	if b == nil {
		if len(ls.buckets) >= maxBuckets {
			// Under a flood of new keys, refuse newcomers rather than
			// evict (and so reset) the buckets of those already limited.
			return false, time.Minute
		}
		b = &bucket{lim: rate.NewLimiter(ls.limit, ls.burst)}
		ls.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
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

// limitAddress applies the per-address limit before authentication.
func (s *Server) limitAddress(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.throttle(addressKey(r.RemoteAddr), s.byAddress); err != nil {
			s.fail(w, r, broker.Principal{}, "", err)
			return
		}
		next.ServeHTTP(w, r)
	})
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

// addressKey is the rate-limit key of a peer: its IPv4 address, or its
// IPv6 /64 (one host commonly holds a whole /64).
func addressKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
