package signin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/signin"
	"github.com/errandhq/errand/store/sqlite"
)

// TestP03 covers the session: fixation, idle and absolute timeouts, the
// cookie's flags, sign-out and revocation, CSRF.
func TestP03(t *testing.T) {
	_, iss := devIdP(t, nil)
	e := newErrand(t, nil, func(string) []issuerSpec { return []issuerSpec{devSpec(iss, "")} })
	alive := func(b *browser) bool {
		res, _ := b.get(e.URL + "/ui/")
		return res.StatusCode == http.StatusOK
	}

	t.Run("fixation: a new id at sign-in, the planted one dead", func(t *testing.T) {
		b := newBrowser(t)
		// An attacker's session id planted in the victim's browser.
		planted, err := e.M.Start(context.Background(), httptest.NewRecorder(), broker.Principal{Issuer: iss, Subject: "mallory", Kind: broker.KindUser})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(e.URL)
		b.c.Jar.SetCookies(u, []*http.Cookie{{Name: e.M.CookieName(), Value: planted.ID, Path: "/"}})
		page := signInDev(t, b, e, "", "alice", "eng")
		if !strings.Contains(page, "#alice ") {
			t.Fatalf("page %q", page)
		}
		if c := sessionCookie(b, e); c == nil || c.Value == planted.ID {
			t.Fatal("session id not rotated at sign-in")
		}
		attacker := newBrowser(t)
		attacker.c.Jar.SetCookies(u, []*http.Cookie{{Name: e.M.CookieName(), Value: planted.ID, Path: "/"}})
		if alive(attacker) {
			t.Fatal("the planted session survived the sign-in")
		}
	})
	t.Run("cookie flags over http", func(t *testing.T) {
		b := newBrowser(t)
		back := b.pick(b.startDev(e, ""), "alice", "eng")
		res, _ := b.get(back.String())
		var c *http.Cookie
		for _, k := range res.Cookies() {
			if k.Name == "errand_session" && k.Value != "" {
				c = k
			}
		}
		if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || c.Secure {
			t.Fatalf("cookie %+v", c)
		}
		if !strings.Contains(res.Header.Get("Set-Cookie")+strings.Join(res.Header.Values("Set-Cookie"), ";"), "HttpOnly") {
			t.Fatal("no HttpOnly")
		}
	})
	t.Run("cookie flags over https: __Host- and Secure", func(t *testing.T) {
		m, err := signin.New(signin.Config{Store: e.Store, PublicURL: "https://errand.example"})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		if _, err := m.Start(context.Background(), rec, broker.Principal{Issuer: iss, Subject: "alice", Kind: broker.KindUser}); err != nil {
			t.Fatal(err)
		}
		c := rec.Result().Cookies()[0]
		if c.Name != "__Host-errand_session" || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
			t.Fatalf("cookie %+v", c)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		b := newBrowser(t)
		signInDev(t, b, e, "", "alice", "eng")
		e.Clock.Add(9 * time.Minute)
		if !alive(b) {
			t.Fatal("dead before the idle timeout")
		}
		// Activity restarts the idle timeout.
		e.Clock.Add(9 * time.Minute)
		if !alive(b) {
			t.Fatal("activity did not restart the idle timeout")
		}
		e.Clock.Add(10*time.Minute + time.Second)
		if alive(b) {
			t.Fatal("alive after the idle timeout")
		}
	})
	t.Run("absolute timeout", func(t *testing.T) {
		b := newBrowser(t)
		signInDev(t, b, e, "", "alice", "eng")
		for i := 0; i < 6; i++ {
			e.Clock.Add(9 * time.Minute)
			if !alive(b) {
				t.Fatalf("dead after %d steps", i)
			}
		}
		e.Clock.Add(9 * time.Minute)
		if alive(b) {
			t.Fatal("alive after the absolute timeout")
		}
	})
	t.Run("sign-out kills the session on the server", func(t *testing.T) {
		b := newBrowser(t)
		page := signInDev(t, b, e, "", "alice", "eng")
		stolen := sessionCookie(b, e)
		if res, _ := b.post(e.URL+"/ui/logout", url.Values{"csrf": {csrfOf(t, page)}}, nil); res.StatusCode != http.StatusOK {
			t.Fatalf("logout %d", res.StatusCode)
		}
		replay := newBrowser(t)
		u, _ := url.Parse(e.URL)
		replay.c.Jar.SetCookies(u, []*http.Cookie{stolen})
		if alive(replay) {
			t.Fatal("the cookie still opens the session after sign-out")
		}
	})
	t.Run("sign-out without the csrf token is refused", func(t *testing.T) {
		b := newBrowser(t)
		signInDev(t, b, e, "", "alice", "eng")
		if res, _ := b.post(e.URL+"/ui/logout", url.Values{}, nil); res.StatusCode != http.StatusForbidden {
			t.Fatalf("logout without csrf: %d", res.StatusCode)
		}
		if !alive(b) {
			t.Fatal("a forged sign-out ended the session")
		}
	})
	t.Run("suspension: RevokeUser ends every session of the user", func(t *testing.T) {
		b1, b2, other := newBrowser(t), newBrowser(t), newBrowser(t)
		signInDev(t, b1, e, "", "erin", "eng")
		signInDev(t, b2, e, "", "erin", "eng")
		signInDev(t, other, e, "", "frank", "eng")
		n, err := e.M.RevokeUser(context.Background(), broker.Ref{Issuer: iss, Subject: "erin"})
		if err != nil || n != 2 {
			t.Fatalf("revoked %d, %v", n, err)
		}
		if alive(b1) || alive(b2) {
			t.Fatal("a revoked user's session is alive")
		}
		if !alive(other) {
			t.Fatal("another user's session died")
		}
	})
	t.Run("csrf", func(t *testing.T) {
		b := newBrowser(t)
		tok := csrfOf(t, signInDev(t, b, e, "", "alice", "eng"))
		for _, tc := range []struct {
			name string
			form url.Values
			hdr  map[string]string
			ok   bool
		}{
			{"token and same origin", url.Values{"csrf": {tok}}, map[string]string{"Origin": e.URL, "Sec-Fetch-Site": "same-origin"}, true},
			{"token, no headers (older browser)", url.Values{"csrf": {tok}}, nil, true},
			{"no token", url.Values{}, nil, false},
			{"wrong token", url.Values{"csrf": {tok[:len(tok)-2] + "xx"}}, nil, false},
			{"cross-site origin", url.Values{"csrf": {tok}}, map[string]string{"Origin": "https://evil.example"}, false},
			{"null origin", url.Values{"csrf": {tok}}, map[string]string{"Origin": "null"}, false},
			{"cross-site fetch", url.Values{"csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
			{"same-site fetch", url.Values{"csrf": {tok}}, map[string]string{"Sec-Fetch-Site": "same-site"}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				res, body := b.post(e.URL+"/ui/act", tc.form, tc.hdr)
				if tc.ok != (res.StatusCode == http.StatusOK) {
					t.Fatalf("%d %s", res.StatusCode, body)
				}
				if !tc.ok && !strings.Contains(body, "csrf_failed") {
					t.Fatalf("code: %s", body)
				}
			})
		}
		// Another session's token is not this one's.
		b2 := newBrowser(t)
		signInDev(t, b2, e, "", "alice", "eng")
		if res, _ := b2.post(e.URL+"/ui/act", url.Values{"csrf": {tok}}, nil); res.StatusCode != http.StatusForbidden {
			t.Fatal("a token of another session was accepted")
		}
	})
	t.Run("only people have sessions", func(t *testing.T) {
		_, err := e.M.Start(context.Background(), httptest.NewRecorder(), broker.Principal{Issuer: iss, Subject: "bot", Kind: broker.KindAgent})
		if !errors.Is(err, broker.ErrWrongPrincipalKind) {
			t.Fatalf("agent session: %v", err)
		}
	})
}

func TestSafeReturnTo(t *testing.T) {
	for p, ok := range map[string]bool{
		"/ui/": true, "/ui/tasks/1?x=1#y": true, "/": true,
		"": false, "//evil": false, "/\\evil": false, "https://evil/": false, "evil": false, "/a\nb": false,
		"/a\\b": false, " /ui": false,
	} {
		if _, got := signin.SafeReturnTo(p); got != ok {
			t.Errorf("SafeReturnTo(%q) = %v", p, got)
		}
	}
}

// TestSigninStartsAreRateLimited: starting sign-ins stores flows; their
// rate is bounded, so a flood cannot grow the table without bound.
func TestSigninStartsAreRateLimited(t *testing.T) {
	_, iss := devIdP(t, nil)
	e := newErrand(t, nil, func(string) []issuerSpec { return []issuerSpec{devSpec(iss, "")} })
	m, err := signin.New(signin.Config{Store: e.Store, PublicURL: e.URL, Verifier: nopVerifier{},
		Providers: []signin.Provider{{Issuer: iss, ClientID: "errand"}}, FlowsPerSecond: 0.001, FlowBurst: 3})
	if err != nil {
		t.Fatal(err)
	}
	h := m.Handler()
	codes := []int{}
	for i := 0; i < 5; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/login", nil))
		codes = append(codes, rec.Code)
	}
	if codes[2] != http.StatusSeeOther || codes[3] != http.StatusTooManyRequests || codes[4] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v", codes)
	}
}

type nopVerifier struct{}

func (nopVerifier) Verify(context.Context, string) (broker.Principal, error) {
	return broker.Principal{}, broker.ErrInvalidToken
}

// TestSessionStoreOutageIs503: with the database unreachable, a request
// with a session cookie is answered 503 with Retry-After, never sent to
// sign in again as if the session were gone, and a sign-in start too.
func TestSessionStoreOutageIs503(t *testing.T) {
	lite, err := sqlite.Open(context.Background(), sqlite.Memory)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lite.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, iss := devIdP(t, nil)
	e := newErrand(t, &signin.SQLStore{DB: lite.DB()}, func(string) []issuerSpec { return []issuerSpec{devSpec(iss, "")} })
	b := newBrowser(t)
	signInDev(t, b, e, "", "alice", "eng")
	lite.Close()
	res, _ := b.get(e.URL + "/ui/")
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("page during an outage: %d", res.StatusCode)
	}
	res, _ = newBrowser(t).get(e.URL + "/ui/login")
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("sign-in start during an outage: %d", res.StatusCode)
	}
}

// TestP02OneSourceFloodingSignInLocksNoOneElseOut: sign-in starts are
// charged to their source's address (the API's per-address limiter in
// serve), so a few hundred GET /ui/login from one address are refused
// alone and another person still signs in. Found by review: one global
// bucket of 500 let anyone lock every person out of the pages.
func TestP02OneSourceFloodingSignInLocksNoOneElseOut(t *testing.T) {
	_, iss := devIdP(t, nil)
	e := newErrand(t, nil, func(string) []issuerSpec { return []issuerSpec{devSpec(iss, "")} })
	var mu sync.Mutex
	buckets := map[string]*rate.Limiter{}
	// The buckets are asked at one instant, so that none refills while
	// the flood runs (a slow machine must not turn it into a trickle).
	at := time.Now()
	perAddress := func(r *http.Request) error {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		defer mu.Unlock()
		l := buckets[host]
		if l == nil {
			l = rate.NewLimiter(200, 400) // serve's default address_rps, burst 2x
			buckets[host] = l
		}
		if !l.AllowN(at, 1) {
			return broker.Errorf(broker.ErrRateLimited, "too many requests; retry later")
		}
		return nil
	}
	m, err := signin.New(signin.Config{Store: e.Store, PublicURL: e.URL, Verifier: nopVerifier{},
		Providers: []signin.Provider{{Issuer: iss, ClientID: "errand"}}, LimitAddress: perAddress})
	if err != nil {
		t.Fatal(err)
	}
	h := m.Handler()
	start := func(addr string) int {
		req := httptest.NewRequest(http.MethodGet, "/ui/login", nil)
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	refused := 0
	for i := 0; i < 700; i++ {
		if start("203.0.113.66:40000") == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused != 300 {
		t.Fatalf("the flooding source was refused %d times of 700, want 300 (a burst of 400)", refused)
	}
	if code := start("198.51.100.7:50000"); code != http.StatusSeeOther {
		t.Fatalf("another person's sign-in during the flood: %d, want 303 to the provider", code)
	}
}
