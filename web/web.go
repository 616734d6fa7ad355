package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/errandhq/errand/broker"
)

// Paths of the pages under Errand's public URL. The REST API's deep links
// (approval_url) point at TaskPath and ApprovalPath.
const (
	Root         = "/ui/"
	TaskPath     = "/ui/tasks/"
	ApprovalPath = "/ui/approvals/"
	HistoryPath  = "/ui/history"
)

// CSP is the Content-Security-Policy of every page: no script of any
// origin, styles and images only from Errand itself, forms only to
// Errand, never framed (clickjacking, P05).
const CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// Viewer is the person signed in, and the CSRF token of their session
// that every form of the page carries.
type Viewer struct {
	Principal broker.Principal
	CSRF      string
}

// Sessions is the sign-in side (signin.Manager): it loads the session of
// a request, sends a request without one to sign in, and checks that a
// form post carries the session's CSRF token from Errand's own origin.
type Sessions interface {
	// Middleware puts the request's session, if any, in its context.
	Middleware(next http.Handler) http.Handler
	// Require sends a request without a session to the sign-in page.
	Require(next http.Handler) http.Handler
	// CheckCSRF refuses a form post without the session's token, or from
	// another origin.
	CheckCSRF(r *http.Request) error
}

// API is what the pages share with the REST API (httpapi.Server), so that
// a page refuses, audits and counts exactly as the API does.
type API interface {
	// Refuse audits and counts a refusal the pages make themselves as the
	// API does, sets the headers its answer needs, and returns the API's
	// status, code and detail.
	Refuse(w http.ResponseWriter, r *http.Request, p broker.Principal, taskID string, err error) (status int, code, detail string)
	// Answer is Refuse for the error of a broker.Service call, which the
	// Service audited: it counts it and sets the headers, and records
	// nothing more.
	Answer(w http.ResponseWriter, r *http.Request, p broker.Principal, err error) (status int, code, detail string)
	// Decided counts a decision: kind "task" or "step_up".
	Decided(kind string, approved bool, created time.Time)
	// Throttle charges the person's per-principal rate limit, shared with
	// their API requests (rate_limited once spent).
	Throttle(p broker.Principal) error
}

// Config configures the pages.
type Config struct {
	Service  *broker.Service
	API      API
	Sessions Sessions
	// Viewer reads the signed-in person of a request's context (from the
	// session Sessions.Middleware put there).
	Viewer func(ctx context.Context) (Viewer, bool)
	// UserIssuers and AgentIssuers decide how principals are written: a
	// bare subject with one issuer of the kind, <issuer>#<sub> otherwise.
	UserIssuers, AgentIssuers []string
	Logger                    *slog.Logger
	// Now is the clock of the pages' relative times (ages, "in 55 min").
	Now func() time.Time
}

// Pages is the web front end; it is an http.Handler for the paths under
// /ui/ other than sign-in's.
type Pages struct {
	svc      *broker.Service
	api      API
	sessions Sessions
	viewer   func(ctx context.Context) (Viewer, bool)
	naming   broker.Naming
	log      *slog.Logger
	now      func() time.Time
	tmpl     map[string]*template.Template
	static   http.Handler
	router   chi.Router
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New builds the pages and their routes.
func New(cfg Config) (*Pages, error) {
	if cfg.Service == nil || cfg.API == nil || cfg.Sessions == nil || cfg.Viewer == nil {
		return nil, errors.New("web: Service, API, Sessions and Viewer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Pages{
		svc: cfg.Service, api: cfg.API, sessions: cfg.Sessions, viewer: cfg.Viewer,
		naming: broker.Naming{Users: cfg.UserIssuers, Agents: cfg.AgentIssuers},
		log:    cfg.Logger, now: cfg.Now,
	}
	var err error
	if p.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	p.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	p.router = p.routes()
	return p, nil
}

// ServeHTTP implements http.Handler.
func (p *Pages) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.router.ServeHTTP(w, r) }

// routes is every page: reads are GETs, and every change a POST checked
// for its CSRF token before anything else (P01).
func (p *Pages) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(secureHeaders)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		p.plainError(w, r, http.StatusNotFound, "not_found", "There is no such page.")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		// A GET never changes anything: a link to a decision is refused.
		p.plainError(w, r, http.StatusMethodNotAllowed, "invalid_request", "This page does not take "+r.Method+" requests.")
	})
	r.Get("/ui/static/*", p.static.ServeHTTP)
	r.Group(func(r chi.Router) {
		r.Use(p.sessions.Middleware, p.sessions.Require, p.throttle)
		r.Get("/ui/", p.queue)
		r.Get("/ui/tasks", p.queue)
		r.Get("/ui/tasks/{id}", p.task)
		r.Get("/ui/approvals/{approval}", p.approval)
		r.Get("/ui/history", p.history)
		r.Group(func(r chi.Router) {
			r.Use(p.csrf)
			r.Post("/ui/tasks/{id}/approve", p.approveTask)
			r.Post("/ui/tasks/{id}/deny", p.denyTask)
			r.Post("/ui/approvals/{approval}/approve", p.approveStepUp)
			r.Post("/ui/approvals/{approval}/deny", p.denyStepUp)
		})
	})
	return r
}

// secureHeaders sets the headers of every page: the strict CSP, no
// framing (also for browsers without frame-ancestors), no sniffing, no
// caching of what a person saw, and a referrer only to Errand itself
// (a form post's Origin header stays what it is: with no-referrer,
// browsers send Origin: null).
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// throttle holds a signed-in person to the per-principal rate limit of
// the REST API, the same bucket as their bearer-token requests.
func (p *Pages) throttle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.api.Throttle(p.viewerOf(r).Principal); err != nil {
			p.refuse(w, r, "", err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// csrf refuses a form post that does not carry the session's CSRF token
// or comes from another origin, before the handler reads anything (P01).
// The refusal is audited as the signed-in person's, like any other.
func (p *Pages) csrf(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := p.sessions.CheckCSRF(r)
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		v, _ := p.viewer(r.Context())
		task := chi.URLParam(r, "id")
		if !broker.ValidTaskID(task) {
			task = ""
		}
		if aerr := p.svc.RecordRefusal(r.Context(), v.Principal, task, r.Method+" "+routePattern(r), err); aerr != nil {
			p.log.ErrorContext(r.Context(), "cannot audit a refused form post", "err", aerr)
			w.Header().Set("Retry-After", "5")
			p.plainError(w, r, http.StatusServiceUnavailable, "unavailable", "The refusal could not be recorded; nothing was changed. Try again shortly.")
			return
		}
		p.render(w, r, http.StatusForbidden, "error", errorPage{
			chrome: p.chrome(v), Status: http.StatusForbidden, Code: broker.CodeOf(err),
			Detail: "This form did not come from a page of Errand's open in your session (its CSRF token is missing or wrong, " +
				"or it was sent from another site). Nothing was changed: open the page again and decide there.",
		})
	})
}

func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return rc.RoutePattern()
	}
	return r.URL.Path
}

// viewerOf is the signed-in person; Require let only them through.
func (p *Pages) viewerOf(r *http.Request) Viewer {
	v, _ := p.viewer(r.Context())
	return v
}

// refuse answers a refusal the pages make themselves (a malformed form, a
// rate limit) as the REST API would (status and code), audited by it, as
// a page that says what happened and that nothing changed.
func (p *Pages) refuse(w http.ResponseWriter, r *http.Request, taskID string, err error) {
	v := p.viewerOf(r)
	status, code, detail := p.api.Refuse(w, r, v.Principal, taskID, err)
	p.refusedPage(w, r, v, taskID, status, code, detail)
}

// fail answers the error of a broker.Service call as refuse does; the
// Service audited it. taskID is the task the page is about.
func (p *Pages) fail(w http.ResponseWriter, r *http.Request, taskID string, err error) {
	v := p.viewerOf(r)
	status, code, detail := p.api.Answer(w, r, v.Principal, err)
	p.refusedPage(w, r, v, taskID, status, code, detail)
}

// refusedPage says what refused a request of v's and that nothing changed.
func (p *Pages) refusedPage(w http.ResponseWriter, r *http.Request, v Viewer, taskID string, status int, code, detail string) {
	page := errorPage{chrome: p.chrome(v), Status: status, Code: code, Detail: detail}
	switch code {
	case "task_changed":
		page.Detail = "The task changed after this page showed it (" + detail + "). Nothing was approved or denied: " +
			"review what it asks now and decide again."
		page.Back = TaskPath + taskID
	case "internal":
		page.Detail = "An unexpected error; nothing was changed."
	}
	p.render(w, r, status, "error", page)
}

// plainError answers a page error that is no refusal of the broker's
// (an unknown path, a wrong method).
func (p *Pages) plainError(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	p.render(w, r, status, "error", errorPage{Status: status, Code: code, Detail: detail})
}

// errorPage is what a refused request shows.
type errorPage struct {
	chrome
	Status       int
	Code, Detail string
	Back         string
}

// chrome is what every page's header needs: who is signed in, the
// session's CSRF token (for the sign-out form) and whether they audit.
type chrome struct {
	Viewer, CSRF string
	Auditor      bool
}

func (p *Pages) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	t, ok := p.tmpl[name]
	if !ok {
		panic("web: no template " + name)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", data); err != nil {
		p.log.ErrorContext(r.Context(), "render page", "page", name, "err", err)
	}
}

func (p *Pages) chrome(v Viewer) chrome {
	return chrome{Viewer: p.who(v), CSRF: v.CSRF, Auditor: v.Principal.Auditor}
}

// who is how the header names the signed-in person.
func (p *Pages) who(v Viewer) string {
	if v.Principal.Kind == "" {
		return ""
	}
	return visible(p.naming.User(v.Principal.Ref()))
}

func parseTemplates() (map[string]*template.Template, error) {
	base, err := template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"queue", "task", "approval", "history", "error"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}
