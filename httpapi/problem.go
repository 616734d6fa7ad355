package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/errandhq/errand/broker"
)

// Problem is an RFC 9457 problem detail with Errand's stable code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	// Policies are the ids of the policies (Cedar or Rego) behind a policy_denied or
	// approval_required refusal.
	Policies []string `json:"policies,omitempty"`
	// ApprovalID names the step-up approval an approval_required refusal
	// waits for; Reasons are the @step_up texts the user is shown.
	ApprovalID string   `json:"approval_id,omitempty"`
	Reasons    []string `json:"reasons,omitempty"`
	// ApprovalURL is the page where the task's user decides the
	// approval_id (a deep link for the agent to hand on).
	ApprovalURL string `json:"approval_url,omitempty"`
	// Error is the OAuth error code the refusal is (oauthErrorOf), where
	// one fits, so that OAuth libraries can read the reason.
	Error string `json:"error,omitempty"`
}

var statusOf = map[string]int{
	"invalid_request":        http.StatusBadRequest,
	"invalid_scope":          http.StatusBadRequest,
	"invalid_token":          http.StatusUnauthorized,
	"token_not_accepted":     http.StatusUnauthorized,
	"wrong_principal_kind":   http.StatusForbidden,
	"not_task_party":         http.StatusForbidden,
	"approval_forbidden":     http.StatusForbidden,
	"scope_exceeds_request":  http.StatusForbidden,
	"scope_exceeds_grant":    http.StatusForbidden,
	"scope_exceeds_approval": http.StatusForbidden,
	"blocked_action":         http.StatusForbidden,
	"policy_denied":          http.StatusForbidden,
	"approval_required":      http.StatusForbidden,
	"budget_exhausted":       http.StatusTooManyRequests,
	"agent_suspended":        http.StatusForbidden,
	"not_found":              http.StatusNotFound,
	"task_not_active":        http.StatusConflict,
	"task_immutable":         http.StatusConflict,
	"task_changed":           http.StatusConflict,
	"idempotency_conflict":   http.StatusConflict,
	"invalid_dpop_proof":     http.StatusBadRequest,
	"dpop_required":          http.StatusBadRequest,
	"use_dpop_nonce":         http.StatusBadRequest,
	"rate_limited":           http.StatusTooManyRequests,
	"body_too_large":         http.StatusRequestEntityTooLarge,
	"unavailable":            http.StatusServiceUnavailable,
}

// statusError overrides the status of a refusal (415 for a wrong
// Content-Type, 405) while keeping its code.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// RetryAfterSeconds is the Retry-After of every 503.
const RetryAfterSeconds = "5"

// fail answers as problem+json the error a broker.Service call returned:
// the Service recorded the refusal already (see Answer).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, p broker.Principal, err error) {
	status, pr := s.problem(w, r, p, err, nil)
	writeProblemWith(w, status, pr.Code, pr)
}

// refuse answers as problem+json a refusal the API makes itself (a
// malformed body or query, a bad token, a rate limit), recording it (see
// Refuse).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, p broker.Principal, taskID string, err error) {
	status, pr := s.problem(w, r, p, err, s.recorder(r, p, taskID, err))
	writeProblemWith(w, status, pr.Code, pr)
}

// Refuse does for a refusal made outside the broker everything the REST
// API does before it answers one of its own, so that other faces of
// Errand (the approval pages, sign-in) refuse exactly as it does: it
// audits the refusal (once, op the request's route; callers with no
// verified identity are counted and chained as periodic summaries),
// counts it, sets the headers the answer needs (Retry-After,
// WWW-Authenticate) on w, and returns the status, code and detail the API
// answers. When the refusal cannot be audited the answer is 503
// unavailable; an unexpected error is 500 internal with no detail.
func (s *Server) Refuse(w http.ResponseWriter, r *http.Request, p broker.Principal, taskID string, err error) (status int, code, detail string) {
	status, pr := s.problem(w, r, p, err, s.recorder(r, p, taskID, err))
	return status, pr.Code, pr.Detail
}

// Answer is Refuse for the error a broker.Service call returned: the
// Service audited its refusal already, so Answer only counts it, sets the
// headers and says what the API answers.
func (s *Server) Answer(w http.ResponseWriter, r *http.Request, p broker.Principal, err error) (status int, code, detail string) {
	status, pr := s.problem(w, r, p, err, nil)
	return status, pr.Code, pr.Detail
}

// recorder records a refusal of the API's own, op its route.
func (s *Server) recorder(r *http.Request, p broker.Principal, taskID string, err error) func() error {
	return func() error { return s.svc.RecordRefusal(r.Context(), p, taskID, op(r), err) }
}

// problem is the answer to err: its status and problem, with the headers
// it needs set on w. record audits a refusal made outside the broker; it
// is nil for a Service's result, which the Service audited.
func (s *Server) problem(w http.ResponseWriter, r *http.Request, p broker.Principal, err error, record func() error) (int, Problem) {
	code := broker.CodeOf(err)
	infoOf(r.Context()).set(func(ri *reqInfo) {
		if ri.code = code; code == "" {
			ri.code = "internal"
		}
	})
	status, known := statusOf[code]
	var se *statusError
	if errors.As(err, &se) {
		status = se.status
	}
	switch {
	case !known:
		s.log.ErrorContext(r.Context(), "internal error", "op", op(r), "err", err)
		return http.StatusInternalServerError, Problem{Code: "internal"}
	case errors.As(err, new(*throttled)):
		ra, _ := retryAfter(err)
		s.metrics.refusals.WithLabelValues(code).Inc()
		w.Header().Set("Retry-After", ra)
		return status, Problem{Code: code, Detail: "too many requests; retry later"}
	case status == http.StatusServiceUnavailable:
		s.log.WarnContext(r.Context(), "dependency unavailable", "op", op(r), "err", err)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		return status, Problem{Code: code, Detail: "a dependency is unavailable; retry later"}
	}
	if p.Kind == "" {
		// A caller with no verified identity is counted, not chained one
		// by one: see anonRefusals (H03).
		s.anon.note(s.anonSource(r), code, time.Now())
	} else if record != nil {
		if aerr := record(); aerr != nil {
			s.log.ErrorContext(r.Context(), "cannot audit refusal", "op", op(r), "code", code, "err", aerr)
			w.Header().Set("Retry-After", RetryAfterSeconds)
			return http.StatusServiceUnavailable, Problem{Code: "unavailable", Detail: "the refusal could not be recorded; retry later"}
		}
	}
	s.metrics.refusals.WithLabelValues(code).Inc()
	pr := Problem{Code: code, Detail: broker.RefusalDetail(err), Error: oauthErrorOf[code]}
	var be *broker.Error
	if errors.As(err, &be) {
		pr.Policies, pr.ApprovalID, pr.Reasons = be.Policies, be.ApprovalID, be.Reasons
		pr.ApprovalURL = s.approvalURL(pr.ApprovalID)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	if status == http.StatusTooManyRequests && code != "budget_exhausted" {
		// A spent budget does not come back with time: no Retry-After.
		w.Header().Set("Retry-After", "60")
	}
	return status, pr
}

// ApprovalPath is where the approval page of a step-up approval lives,
// under Errand's public URL; TaskPath the page of a task.
const (
	ApprovalPath = "/ui/approvals/"
	TaskPath     = "/ui/tasks/"
)

// approvalURL is the deep link of an approval_required refusal: the page
// where the task's user decides the approval ("" for no approval).
func (s *Server) approvalURL(id string) string {
	if id == "" {
		return ""
	}
	return s.self + ApprovalPath + url.PathEscape(id)
}

// Decided counts a decision taken elsewhere than the REST API (the
// approval pages) as the API counts its own: kind "task" or "step_up",
// and how long the request waited since created.
func (s *Server) Decided(kind string, approved bool, created time.Time) {
	s.metrics.decided(kind, approved, created)
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	writeProblemWith(w, status, code, Problem{Detail: detail})
}

func writeProblemWith(w http.ResponseWriter, status int, code string, pr Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	pr.Type, pr.Title, pr.Status, pr.Code = "urn:errand:problem:"+code, http.StatusText(status), status, code
	_ = json.NewEncoder(w).Encode(pr)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	encodeJSON(w, status, v)
}

// writeJSONCached answers 200 with public, cacheable metadata.
func writeJSONCached(w http.ResponseWriter, v any) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	encodeJSON(w, http.StatusOK, v)
}

func encodeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Default().Debug("write response", "err", err)
	}
}
