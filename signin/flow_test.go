package signin_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/signin"
)

// signInDev runs a whole sign-in through the dev provider and returns the
// page Errand shows after it.
func signInDev(t *testing.T, b *browser, e *errand, returnTo, sub, groups string) string {
	t.Helper()
	q := ""
	if returnTo != "" {
		q = "?return_to=" + url.QueryEscape(returnTo)
	}
	back := b.pick(b.startDev(e, q), sub, groups)
	res, body := b.get(back.String())
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: %d %s", res.StatusCode, body)
	}
	_, page, _ := b.follow(location(t, res).String())
	return page
}

func sessionCookie(b *browser, e *errand) *http.Cookie {
	u, _ := url.Parse(e.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == e.M.CookieName() {
			return c
		}
	}
	return nil
}

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	_, tok, ok := strings.Cut(page, "csrf=")
	if !ok {
		t.Fatalf("no csrf in %q", page)
	}
	return tok
}

// TestSigninDevProvider signs in through errand dev's provider (PostgreSQL
// sessions), lands on return_to, posts a form, and signs out.
func TestSigninDevProvider(t *testing.T) {
	pg := testpg.Store(t)
	db := stdlib.OpenDBFromPool(pg.Pool())
	t.Cleanup(func() { db.Close() })
	_, iss := devIdP(t, nil)
	e := newErrand(t, &signin.SQLStore{DB: db}, func(string) []issuerSpec { return []issuerSpec{devSpec(iss, "")} })
	b := newBrowser(t)

	res, _ := b.get(e.URL + "/ui/tasks/t1?x=1")
	if u := location(t, res); u.Path != "/ui/login" || u.Query().Get("return_to") != "/ui/tasks/t1?x=1" {
		t.Fatalf("Require redirected to %s", u)
	}
	page := signInDev(t, b, e, "/ui/tasks/t1?x=1", "alice", "eng,auditors")
	if !strings.HasPrefix(page, "user="+iss+"#alice groups=eng,auditors") {
		t.Fatalf("page after sign-in: %q", page)
	}
	csrf := csrfOf(t, page)
	if _, body := b.post(e.URL+"/ui/act", url.Values{"csrf": {csrf}}, map[string]string{"Origin": e.URL, "Sec-Fetch-Site": "same-origin"}); body != "done" {
		t.Fatalf("form post with the csrf token: %q", body)
	}
	res, body := b.post(e.URL+"/ui/logout", url.Values{"csrf": {csrf}}, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
		t.Fatalf("logout: %d %s", res.StatusCode, body)
	}
	if res, _ := b.get(e.URL + "/ui/"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d", res.StatusCode)
	}
}

// TestSigninZitadel signs in against an OpenID Provider built from
// zitadel/oidc's op package and example storage: with a public client
// (PKCE alone) and with a confidential one (client secret and PKCE).
func TestSigninZitadel(t *testing.T) {
	for _, tc := range []struct {
		name, client, secret string
	}{{"public", "errand", ""}, {"confidential", "errand-web", "web-secret"}} {
		t.Run(tc.name, func(t *testing.T) {
			var iss string
			e := newErrand(t, nil, func(base string) []issuerSpec {
				iss = zitadelOP(t, base+"/ui/callback")
				return []issuerSpec{zitadelSpec(iss, tc.client, tc.secret, "")}
			})
			b := newBrowser(t)
			res, body := b.get(e.URL + "/ui/login?return_to=/ui/queue")
			if res.StatusCode != http.StatusSeeOther {
				t.Fatalf("login: %d %s", res.StatusCode, body)
			}
			authz := location(t, res)
			if q := authz.Query(); q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" {
				t.Fatalf("authorization request without PKCE, nonce or state: %s", authz)
			}
			back := b.zitadelLogin(authz, iss)
			res, body = b.get(back.String())
			if res.StatusCode != http.StatusSeeOther || location(t, res).Path != "/ui/queue" {
				t.Fatalf("callback: %d %s", res.StatusCode, body)
			}
			_, page, _ := b.follow(e.URL + "/ui/queue")
			if !strings.HasPrefix(page, "user="+iss+"#id1 ") {
				t.Fatalf("page after sign-in: %q", page)
			}
		})
	}
}

// TestP02 covers the sign-in's refusals: state missing, unbound or
// reused; code injection; PKCE downgrade; open redirects in return_to;
// mix-up between user issuers; the RFC 9207 iss parameter.
func TestP02(t *testing.T) {
	_, iss := devIdP(t, nil)
	var ziss string
	e := newErrand(t, nil, func(base string) []issuerSpec {
		ziss = zitadelOP(t)
		return []issuerSpec{devSpec(iss, "/ui/callback"), zitadelSpec(ziss, "errand", "", "/ui/callback/zitadel")}
	})
	devLogin := "?issuer=" + url.QueryEscape(iss)
	refused := func(t *testing.T, res *http.Response, body string, want int) {
		t.Helper()
		if res.StatusCode != want || sessionCookieIn(res, e) {
			t.Fatalf("status %d (want %d), body %.200s", res.StatusCode, want, body)
		}
	}

	t.Run("several issuers: a choice page", func(t *testing.T) {
		res, body := newBrowser(t).get(e.URL + "/ui/login")
		if res.StatusCode != http.StatusOK || !strings.Contains(body, url.QueryEscape(iss)) || !strings.Contains(body, url.QueryEscape(ziss)) {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Fatalf("CSP %q", csp)
		}
	})
	t.Run("state missing", func(t *testing.T) {
		b := newBrowser(t)
		back := b.pick(b.startDev(e, devLogin), "alice", "eng")
		q := back.Query()
		q.Del("state")
		back.RawQuery = q.Encode()
		n := e.Audit.count()
		res, body := b.get(back.String())
		refused(t, res, body, http.StatusBadRequest)
		if e.Audit.count() != n+1 {
			t.Fatal("refusal not audited")
		}
	})
	t.Run("state of another browser (login CSRF)", func(t *testing.T) {
		attacker, victim := newBrowser(t), newBrowser(t)
		back := attacker.pick(attacker.startDev(e, devLogin), "mallory", "eng")
		res, body := victim.get(back.String())
		refused(t, res, body, http.StatusBadRequest)
	})
	t.Run("state reused", func(t *testing.T) {
		b := newBrowser(t)
		authz := b.startDev(e, devLogin)
		back := b.pick(authz, "alice", "eng")
		if res, _ := b.get(back.String()); res.StatusCode != http.StatusSeeOther {
			t.Fatal("first use refused")
		}
		// Replay with the flow cookie put back: the state is spent.
		u, _ := url.Parse(e.URL)
		b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "errand_signin", Value: authz.Query().Get("state"), Path: "/"}})
		res, body := b.get(back.String())
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") {
			t.Fatalf("replayed state: %d %s", res.StatusCode, body)
		}
	})
	t.Run("code injection", func(t *testing.T) {
		// The victim's code, stolen, injected into the attacker's own
		// flow: PKCE binds the code to the victim's verifier.
		victim, attacker := newBrowser(t), newBrowser(t)
		stolen := victim.pick(victim.startDev(e, devLogin), "alice", "eng")
		authz := attacker.startDev(e, devLogin)
		inj, _ := url.Parse(e.URL + "/ui/callback")
		inj.RawQuery = url.Values{"code": {stolen.Query().Get("code")}, "state": {authz.Query().Get("state")}, "iss": {iss}}.Encode()
		res, body := attacker.get(inj.String())
		refused(t, res, body, http.StatusBadRequest)
		if !strings.Contains(body, "invalid_grant") {
			t.Fatalf("want the provider's invalid_grant: %s", body)
		}
	})
	t.Run("open redirect in return_to", func(t *testing.T) {
		for _, rt := range []string{"//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)",
			"ui/relative", "/ui/\r\nLocation: https://evil.example", "http:/evil.example"} {
			res, body := newBrowser(t).get(e.URL + "/ui/login?issuer=" + url.QueryEscape(iss) + "&return_to=" + url.QueryEscape(rt))
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("return_to %q: %d %s", rt, res.StatusCode, body)
			}
		}
		for _, rt := range []string{"//evil.example/x", "https://evil.example/"} {
			if _, ok := signin.SafeReturnTo(rt); ok {
				t.Fatalf("SafeReturnTo(%q) accepted", rt)
			}
		}
	})
	t.Run("mix-up: answer at another issuer's callback", func(t *testing.T) {
		b := newBrowser(t)
		back := b.pick(b.startDev(e, devLogin), "alice", "eng")
		back.Path = "/ui/callback/zitadel"
		res, body := b.get(back.String())
		refused(t, res, body, http.StatusBadRequest)
	})
	t.Run("mix-up: iss names another issuer (RFC 9207)", func(t *testing.T) {
		b := newBrowser(t)
		back := b.pick(b.startDev(e, devLogin), "alice", "eng")
		q := back.Query()
		q.Set("iss", ziss)
		back.RawQuery = q.Encode()
		res, body := b.get(back.String())
		refused(t, res, body, http.StatusBadRequest)
	})
	t.Run("iss missing though promised (RFC 9207)", func(t *testing.T) {
		b := newBrowser(t)
		back := b.pick(b.startDev(e, devLogin), "alice", "eng")
		q := back.Query()
		q.Del("iss")
		back.RawQuery = q.Encode()
		res, body := b.get(back.String())
		refused(t, res, body, http.StatusBadRequest)
	})
	t.Run("PKCE downgrade: a provider without S256", func(t *testing.T) {
		_, plain := devIdP(t, func(md map[string]any) { md["code_challenge_methods_supported"] = []string{"plain"} })
		e2 := newErrand(t, nil, func(string) []issuerSpec { return []issuerSpec{devSpec(plain, "")} })
		res, body := newBrowser(t).get(e2.URL + "/ui/login")
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "S256") {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	})
	t.Run("PKCE downgrade: the challenge stripped", func(t *testing.T) {
		b := newBrowser(t)
		authz := b.startDev(e, devLogin)
		q := authz.Query()
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		authz.RawQuery = q.Encode()
		if res, _ := b.get(authz.String()); res.StatusCode != http.StatusBadRequest {
			t.Fatalf("dev provider accepted an authorization request without PKCE: %d", res.StatusCode)
		}
	})
}

func sessionCookieIn(res *http.Response, e *errand) bool {
	for _, c := range res.Cookies() {
		if c.Name == e.M.CookieName() && c.Value != "" && c.MaxAge >= 0 {
			return true
		}
	}
	return false
}

// TestJ14Nonce: an ID token whose nonce is missing or not the flow's is
// refused, as is one of another issuer or kind, even with a valid
// signature.
func TestJ14Nonce(t *testing.T) {
	idp := testoidc.New(t)
	agents := testoidc.New(t)
	v, err := identity.New(identity.Config{Issuers: []identity.Issuer{
		{URL: idp.URL, Audience: "errand", Kind: broker.KindUser},
		{URL: agents.URL, Audience: "errand", Kind: broker.KindAgent},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := signin.New(signin.Config{Store: &signin.SQLStore{}, PublicURL: "https://errand.example", Verifier: v,
		Providers: []signin.Provider{{Issuer: idp.URL, ClientID: "errand"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, token, issuer string
		want                error
	}{
		{"nonce matches", idp.Token(t, "alice", "errand", map[string]any{"nonce": "n-1"}), idp.URL, nil},
		{"nonce missing", idp.Token(t, "alice", "errand", nil), idp.URL, broker.ErrInvalidToken},
		{"nonce of another flow", idp.Token(t, "alice", "errand", map[string]any{"nonce": "n-2"}), idp.URL, broker.ErrInvalidToken},
		{"another issuer than the flow's", idp.Token(t, "alice", "errand", map[string]any{"nonce": "n-1"}), agents.URL, broker.ErrInvalidToken},
		{"an agent's token", agents.Token(t, "alice", "errand", map[string]any{"nonce": "n-1"}), agents.URL, broker.ErrWrongPrincipalKind},
		{"wrong audience", idp.Token(t, "alice", "other", map[string]any{"nonce": "n-1"}), idp.URL, broker.ErrInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := m.VerifyIDToken(ctx, tc.token, tc.issuer, "n-1")
			if tc.want == nil {
				if err != nil || p.Subject != "alice" {
					t.Fatalf("%v %+v", err, p)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestSessionsSharedByReplicas: two replicas behind one public URL on
// one PostgreSQL database: a sign-in started on one finishes on the
// other, the session opens pages on both, and a sign-out on one ends it
// on the other.
func TestSessionsSharedByReplicas(t *testing.T) {
	pg := testpg.Store(t)
	db := stdlib.OpenDBFromPool(pg.Pool())
	t.Cleanup(func() { db.Close() })
	st := &signin.SQLStore{DB: db}
	_, iss := devIdP(t, nil)
	const public = "http://127.0.0.1:1"
	specs := func(string) []issuerSpec { return []issuerSpec{devSpec(iss, "")} }
	a, b := newErrandAt(t, st, public, specs), newErrandAt(t, st, public, specs)
	br := newBrowser(t) // cookies are per host, not port: one site, as behind the balancer
	res, _ := br.get(a.URL + "/ui/login?return_to=/ui/queue")
	back := br.pick(location(t, res), "alice", "eng")
	if back.Scheme+"://"+back.Host != public {
		t.Fatalf("redirect_uri %s is not under the public URL", back)
	}
	res, body := br.get(b.URL + back.Path + "?" + back.RawQuery)
	if res.StatusCode != http.StatusSeeOther || location(t, res).Path != "/ui/queue" {
		t.Fatalf("callback on the other replica: %d %s", res.StatusCode, body)
	}
	for _, e := range []*errand{a, b} {
		if res, page := br.get(e.URL + "/ui/queue"); res.StatusCode != http.StatusOK || !strings.Contains(page, "#alice ") {
			t.Fatalf("replica %s: %d %q", e.URL, res.StatusCode, page)
		}
	}
	_, page := br.get(a.URL + "/ui/")
	if res, _ := br.post(a.URL+"/ui/logout", url.Values{"csrf": {csrfOf(t, page)}}, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", res.StatusCode)
	}
	if res, _ := br.get(b.URL + "/ui/queue"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("the other replica still opens the session: %d", res.StatusCode)
	}
}
