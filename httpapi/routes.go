package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/errandhq/errand/internal/version"
)

// routes is every route of the v1 contract, in one place.
func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer, s.instrument)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
	})

	r.Group(func(r chi.Router) {
		r.Use(s.withTimeout)
		r.Get("/healthz", s.healthz)
		r.Get("/readyz", s.readyz)
		r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		r.Get("/.well-known/jwks.json", s.jwksHandler)
		r.Get("/.well-known/oauth-authorization-server", s.metadata)
		r.Get("/.well-known/authzen-configuration", s.authzenMetadata)
	})

	// OpenID AuthZEN Authorization API 1.0, for enforcement points.
	r.Route("/access/v1", func(r chi.Router) {
		r.Use(s.limitAddress, s.withTimeout)
		r.Post("/evaluation", s.evaluation)
		r.Post("/evaluations", s.evaluations)
	})

	// The OAuth front door (oauth.go, ciba.go): form bodies, RFC 6749 §5.2
	// errors.
	r.Route("/oauth", func(r chi.Router) {
		r.Use(s.limitAddress, s.withTimeout)
		r.Post("/token", s.token)
		r.Post("/bc-authorize", s.backchannelAuthorize)
	})

	r.Route("/v1", func(r chi.Router) {
		r.Use(s.limitAddress)
		// A stream lives longer than any request timeout.
		r.Get("/revocations/stream", s.revocationStream)
		r.Group(func(r chi.Router) {
			r.Use(s.withTimeout)
			r.Post("/tasks", s.createTask)
			r.Get("/tasks", s.listTasks)
			r.Get("/tasks/{id}", s.getTask)
			r.Post("/tasks/{id}/approve", s.approveTask)
			r.Post("/tasks/{id}/deny", s.denyTask)
			r.Post("/tasks/{id}/tokens", s.mintToken)
			r.Post("/tasks/{id}/secrets", s.issueSecret)
			r.Post("/tasks/{id}/close", s.closeTask)
			r.Get("/tasks/{id}/history", s.taskHistory)
			r.Get("/approvals", s.listApprovals)
			r.Get("/approvals/{approval}", s.getApproval)
			r.Post("/approvals/{approval}/approve", s.approveApproval)
			r.Post("/approvals/{approval}/deny", s.denyApproval)
			r.Post("/introspect", s.introspect)
			r.Post("/revoke", s.revoke)
			r.Get("/revocations", s.revocations)
			r.Get("/audit/events", s.auditEvents)
			r.Get("/credentials", s.credentials)
			r.Post("/agents/suspend", s.suspendAgent)
			r.Post("/agents/unsuspend", s.unsuspendAgent)
		})
	})
	return r
}

func (s *Server) withTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": version.Get().Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.Ready(r.Context()); err != nil {
		w.Header().Set("Retry-After", RetryAfterSeconds)
		writeProblem(w, http.StatusServiceUnavailable, "unavailable", "the database is unreachable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) jwksHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.jwks())
}

// metadata is the RFC 8414 authorization server metadata.
func (s *Server) metadata(w http.ResponseWriter, _ *http.Request) {
	md := map[string]any{
		"issuer":                   s.self,
		"jwks_uri":                 s.self + "/.well-known/jwks.json",
		"introspection_endpoint":   s.self + "/v1/introspect",
		"response_types_supported": []string{},
		// The OAuth front door (oauth.go): clients authenticate with their
		// workload ID token, as an RFC 7523 client assertion
		// (private_key_jwt's wire form) or in the Authorization header.
		"token_endpoint":                                             s.self + "/oauth/token",
		"revocation_endpoint":                                        s.self + "/v1/revoke",
		"backchannel_authentication_endpoint":                        s.self + "/oauth/bc-authorize",
		"backchannel_token_delivery_modes_supported":                 []string{"poll"},
		"backchannel_user_code_parameter_supported":                  false,
		"grant_types_supported":                                      []string{grantTokenExchange, grantCIBA},
		"authorization_details_types_supported":                      []string{authDetailsType},
		"token_endpoint_auth_methods_supported":                      clientAuthMethods,
		"backchannel_authentication_endpoint_auth_methods_supported": clientAuthMethods,
		"introspection_endpoint_auth_methods_supported":              clientAuthMethods,
		"revocation_endpoint_auth_methods_supported":                 clientAuthMethods,
		// RFC 9449 §5.1: the algorithms of the DPoP proofs accepted.
		"dpop_signing_alg_values_supported": s.dpop.Algorithms(),
	}
	// draft-ietf-oauth-identity-assertion-authz-grant §5 (IdP metadata),
	// through the identity-chaining property, where a target is configured.
	if s.svc.IssuesIDJAGs() {
		md["identity_chaining_requested_token_types_supported"] = []string{tokenTypeIDJAG}
	}
	// RFC 8414 §2: the algorithms of the client assertions accepted, those
	// of the trusted issuers' ID tokens.
	if len(s.assertionAlgs) > 0 {
		for _, ep := range []string{"token_endpoint", "introspection_endpoint", "revocation_endpoint"} {
			md[ep+"_auth_signing_alg_values_supported"] = s.assertionAlgs
		}
	}
	writeJSONCached(w, md)
}

// clientAuthMethods are the client authentications of every OAuth
// endpoint (clientAuth): the workload ID token as an RFC 7523 client
// assertion, which is private_key_jwt's form, or as a bearer token.
var clientAuthMethods = []string{"private_key_jwt", "bearer"}
