package signin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/devidp"
	"github.com/errandhq/errand/signin"
	"github.com/errandhq/errand/store/sqlite"
)

// lateServer is an httptest server whose handler is set once its URL is
// known (an issuer's and a relying party's URLs are part of their config).
func lateServer(t *testing.T) (*httptest.Server, func(http.Handler)) {
	var (
		mu sync.Mutex
		h  http.Handler = http.NotFoundHandler()
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hh := h
		mu.Unlock()
		hh.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func(n http.Handler) { mu.Lock(); h = n; mu.Unlock() }
}

// devIdP runs errand dev's identity provider; its user issuer runs the
// code flow. rewrite, when set, edits its discovery document.
func devIdP(t *testing.T, rewrite func(map[string]any)) (*devidp.Provider, string) {
	srv, set := lateServer(t)
	p, err := devidp.New(srv.URL, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	h := p.Handler()
	if rewrite != nil {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
				inner.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			var md map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &md)
			rewrite(md)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(md)
		})
	}
	set(h)
	return p, p.IssuerURL("user")
}

// zitadelOP runs an OpenID Provider built from zitadel/oidc's op package
// and its example storage and login UI: code that this project did not
// write. Its clients: "errand" (native, public, PKCE, loopback redirects
// on any port) and "errand-web" (confidential, the given redirect URIs).
func zitadelOP(t *testing.T, webRedirects ...string) string {
	srv, set := lateServer(t)
	clients := []*storage.Client{storage.NativeClient("errand", "http://127.0.0.1/ui/callback", "http://127.0.0.1/ui/callback/zitadel", "http://127.0.0.1/callback")}
	if len(webRedirects) > 0 {
		clients = append(clients, storage.WebClient("errand-web", "web-secret", webRedirects...))
	}
	storage.RegisterClients(clients...)
	st := storage.NewStorage(storage.NewUserStore(srv.URL))
	set(exampleop.SetupServer(srv.URL, st, nil, false))
	return srv.URL
}

// zitadelUser is the example storage's first user.
func zitadelUser(issuer string) (string, string) {
	u, _ := url.Parse(issuer)
	return "test-user@" + u.Hostname(), "verysecure"
}

type refusal struct {
	who  broker.Principal
	op   string
	code string
}

// audit records refusals as broker.Service.RecordRefusal would be asked to.
type audit struct {
	mu   sync.Mutex
	seen []refusal
}

func (a *audit) RecordRefusal(_ context.Context, p broker.Principal, _, op string, err error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, refusal{p, op, broker.CodeOf(err)})
	return nil
}

func (a *audit) count() int { a.mu.Lock(); defer a.mu.Unlock(); return len(a.seen) }

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// errand is a relying party wired as serve wires it: the sign-in routes,
// and a page behind Require that names the signed-in user, and a form
// post behind CheckCSRF.
type errand struct {
	URL   string
	M     *signin.Manager
	Audit *audit
	Clock *clock
	Store signin.Store
}

type issuerSpec struct {
	prov identity.Issuer
	sign signin.Provider
}

func newErrand(t *testing.T, st signin.Store, specs func(base string) []issuerSpec) *errand {
	t.Helper()
	return newErrandAt(t, st, "", specs)
}

// newErrandAt is newErrand answering for the public URL public (a load
// balancer's, in front of several replicas), or its own when empty.
func newErrandAt(t *testing.T, st signin.Store, public string, specs func(base string) []issuerSpec) *errand {
	t.Helper()
	srv, set := lateServer(t)
	if public == "" {
		public = srv.URL
	}
	if st == nil {
		lite, err := sqlite.Open(context.Background(), sqlite.Memory)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lite.Close() })
		if _, err := lite.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		st = &signin.SQLStore{DB: lite.DB()}
	}
	var (
		icfg  identity.Config
		provs []signin.Provider
	)
	icfg.Self = public
	for _, s := range specs(public) {
		icfg.Issuers = append(icfg.Issuers, s.prov)
		provs = append(provs, s.sign)
	}
	v, err := identity.New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &errand{URL: srv.URL, Audit: &audit{}, Clock: &clock{t: time.Now()}, Store: st}
	e.M, err = signin.New(signin.Config{
		Store: st, PublicURL: public, Verifier: v, Providers: provs, Audit: e.Audit, Now: e.Clock.Now,
		IdleTimeout: 10 * time.Minute, AbsoluteTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h := e.M.Handler()
	for _, p := range e.M.Routes() {
		mux.Handle(p, h)
	}
	mux.Handle("GET /ui/", e.M.Middleware(e.M.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := signin.FromContext(r.Context())
		fmt.Fprintf(w, "user=%s groups=%s csrf=%s", s.User.Ref(), strings.Join(s.User.Groups, ","), s.CSRF)
	}))))
	mux.Handle("POST /ui/act", e.M.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.M.CheckCSRF(r); err != nil {
			http.Error(w, broker.CodeOf(err), http.StatusForbidden)
			return
		}
		fmt.Fprint(w, "done")
	})))
	set(mux)
	return e
}

// devSpec is the dev provider's user issuer as a sign-in provider.
func devSpec(iss string, redirect string) issuerSpec {
	return issuerSpec{
		prov: identity.Issuer{URL: iss, Audience: devidp.Audience, Kind: broker.KindUser, GroupsClaim: "groups",
			AuditorGroup: "auditors", Algorithms: []string{"EdDSA"}},
		sign: signin.Provider{Issuer: iss, ClientID: devidp.Audience, RedirectPath: redirect},
	}
}

func zitadelSpec(iss, clientID, secret, redirect string) issuerSpec {
	return issuerSpec{
		prov: identity.Issuer{URL: iss, Audience: clientID, Kind: broker.KindUser},
		sign: signin.Provider{Issuer: iss, ClientID: clientID, ClientSecret: secret, RedirectPath: redirect},
	}
}

// browser is a cookie-keeping HTTP client that does not follow redirects,
// so that a test sees and may tamper with every step.
type browser struct {
	t *testing.T
	c *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(body)
}

func (b *browser) get(u string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) post(u string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return b.do(req)
}

// follow GETs u and every redirect after it, returning the last answer
// and its URL.
func (b *browser) follow(u string) (*http.Response, string, string) {
	b.t.Helper()
	for i := 0; i < 10; i++ {
		res, body := b.get(u)
		if res.StatusCode/100 != 3 {
			return res, body, u
		}
		next, err := res.Request.URL.Parse(res.Header.Get("Location"))
		if err != nil {
			b.t.Fatal(err)
		}
		u = next.String()
	}
	b.t.Fatal("too many redirects")
	return nil, "", ""
}

// location is the absolute redirect target of res.
func location(t *testing.T, res *http.Response) *url.URL {
	t.Helper()
	if res.StatusCode/100 != 3 {
		t.Fatalf("status %d, want a redirect", res.StatusCode)
	}
	u, err := res.Request.URL.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startDev starts a sign-in at Errand and returns the dev provider's
// authorization request (the picker's URL).
func (b *browser) startDev(e *errand, query string) *url.URL {
	b.t.Helper()
	res, body := b.get(e.URL + "/ui/login" + query)
	if res.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("login: %d %s", res.StatusCode, body)
	}
	return location(b.t, res)
}

// pick answers the dev provider's picker as sub, returning the redirect
// back to Errand's callback (not followed).
func (b *browser) pick(authz *url.URL, sub, groups string) *url.URL {
	b.t.Helper()
	res, body := b.get(authz.String())
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "whoever you say") {
		b.t.Fatalf("picker: %d %s", res.StatusCode, body)
	}
	form := authz.Query()
	form.Set("sub", sub)
	form.Set("groups", groups)
	res, body = b.post(authz.Scheme+"://"+authz.Host+authz.Path, form, nil)
	if res.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("pick: %d %s", res.StatusCode, body)
	}
	return location(b.t, res)
}

// zitadelLogin drives zitadel's example login form from its authorization
// request and returns the redirect back to Errand (not followed).
func (b *browser) zitadelLogin(authz *url.URL, issuer string) *url.URL {
	b.t.Helper()
	_, body, at := b.follow(authz.String())
	u, _ := url.Parse(at)
	id := u.Query().Get("authRequestID")
	if id == "" {
		b.t.Fatalf("zitadel login page: %s %.300s", at, body)
	}
	user, pass := zitadelUser(issuer)
	res, body := b.post(u.Scheme+"://"+u.Host+"/login/username", url.Values{"id": {id}, "username": {user}, "password": {pass}}, nil)
	for res.StatusCode/100 == 3 {
		next := location(b.t, res)
		if next.Host != u.Host {
			return next
		}
		res, body = b.get(next.String())
	}
	b.t.Fatalf("zitadel login: %d %.300s", res.StatusCode, body)
	return nil
}
