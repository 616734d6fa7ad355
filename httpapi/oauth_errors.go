package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/broker"
)

// oauthErrorOf is the one table from Errand's refusal codes to the OAuth
// error codes of RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 8707 §2 and OpenID
// CIBA §11, §13: the error of an OAuth endpoint's answer, and the error
// member of a /v1 problem where one fits. A code absent here has no OAuth
// counterpart.
var oauthErrorOf = map[string]string{
	"invalid_request": "invalid_request",
	"invalid_scope":   "invalid_scope",
	// An identity that fails verification is a failed client
	// authentication (RFC 6749 §5.2); as a subject_token it is
	// invalid_request instead (RFC 8693 §2.2.2, see subjectTokenError).
	"invalid_token":          "invalid_client",
	"token_not_accepted":     "invalid_client",
	"wrong_principal_kind":   "unauthorized_client",
	"agent_suspended":        "unauthorized_client",
	"not_task_party":         "invalid_grant",
	"not_found":              "invalid_grant",
	"task_not_active":        "invalid_grant",
	"approval_forbidden":     "access_denied",
	"policy_denied":          "access_denied",
	"budget_exhausted":       "access_denied",
	"scope_exceeds_request":  "invalid_scope",
	"scope_exceeds_grant":    "invalid_scope",
	"scope_exceeds_approval": "invalid_scope",
	"blocked_action":         "invalid_scope",
	// A step-up approval is pending: the client retries once the user has
	// approved approval_id, as it would poll a CIBA request.
	"approval_required":      "authorization_pending",
	"task_immutable":         "invalid_request",
	"task_changed":           "invalid_request",
	"idempotency_conflict":   "invalid_request",
	"body_too_large":         "invalid_request",
	"rate_limited":           "temporarily_unavailable",
	"unavailable":            "temporarily_unavailable",
	"invalid_target":         "invalid_target",
	"invalid_grant":          "invalid_grant",
	"unsupported_grant_type": "unsupported_grant_type",
	"unsupported_token_type": "invalid_request",
	"authorization_pending":  "authorization_pending",
	"slow_down":              "slow_down",
	"expired_token":          "expired_token",
	"access_denied":          "access_denied",
	// RFC 9449 §5, §8. A proof the task or a policy requires and the
	// request lacks is answered as an invalid one, as Keycloak does.
	"invalid_dpop_proof": "invalid_dpop_proof",
	"dpop_required":      "invalid_dpop_proof",
	"use_dpop_nonce":     "use_dpop_nonce",
}

// oauthDescriptions are the error_description of each Errand code on the
// OAuth endpoints: fixed text that never quotes the request (X08), unlike
// a problem's detail. RFC 6749 §5.2 restricts it to printable ASCII
// without '"' and '\'.
var oauthDescriptions = map[string]string{
	"invalid_request":        "the request is missing a parameter, repeats one, or holds a malformed value",
	"invalid_scope":          "a requested scope is malformed, unknown or not grantable",
	"invalid_token":          "client authentication failed: the identity token is missing, malformed, expired, of an untrusted issuer, for another audience, or reused",
	"token_not_accepted":     "an Errand-issued token is never accepted as an identity",
	"wrong_principal_kind":   "this client may not use this endpoint or grant",
	"agent_suspended":        "the agent is suspended",
	"not_task_party":         "the task belongs to another agent",
	"not_found":              "no such task",
	"task_not_active":        "the task is not approved and live",
	"approval_forbidden":     "only the task's user may decide it",
	"policy_denied":          "a policy denies the request",
	"budget_exhausted":       "the task has spent its budget",
	"scope_exceeds_request":  "a scope exceeds the request",
	"scope_exceeds_grant":    "a scope exceeds the user's grants",
	"scope_exceeds_approval": "a scope exceeds the task's approval",
	"blocked_action":         "a scope names an action that is never grantable to an agent",
	"approval_required":      "the task's user must approve this request first; retry once approval_id is approved",
	"task_immutable":         "an approved task never widens",
	"task_changed":           "the task changed",
	"idempotency_conflict":   "the Idempotency-Key was used with another request",
	"body_too_large":         "the body is too large",
	"rate_limited":           "too many requests; retry later",
	"unavailable":            "a dependency is unavailable; retry later",
	"invalid_target":         "the resource or audience is not a configured audience, or not one the task's approval names",
	"invalid_grant":          "the grant is unknown, expired, spent or another client's",
	"unsupported_grant_type": "the grant type is not supported",
	"unsupported_token_type": "the token type is not supported",
	"authorization_pending":  "the user has not decided yet",
	"slow_down":              "polled too fast; add 5 seconds to the interval",
	"expired_token":          "the request expired before the user approved it",
	"access_denied":          "the user denied the request",
	"invalid_dpop_proof":     "the DPoP proof is malformed, not for this request, stale, reused, or signed by a key or algorithm not accepted",
	"dpop_required":          "the task or a policy requires a DPoP-bound token: send a DPoP proof",
	"use_dpop_nonce":         "the DPoP proof must carry the nonce of the DPoP-Nonce header",
	"internal":               "internal error",
}

// maxOAuthDescription caps error_description.
const maxOAuthDescription = 200

// oauthError overrides the OAuth error of a refusal whose code alone does
// not say it: a subject_token that fails verification is invalid_request,
// not invalid_client; malformed authorization_details are RFC 9396 §5's
// invalid_authorization_details.
type oauthError struct {
	error string
	err   error
}

func (e *oauthError) Error() string { return e.err.Error() }
func (e *oauthError) Unwrap() error { return e.err }

// noStore marks a token endpoint answer uncacheable (RFC 6749 §5.1).
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

// oauthFail answers on an OAuth endpoint the error a broker.Service call
// returned: the Service recorded the refusal already (except
// authorization_pending, an answer that a polling client receives every
// few seconds and that refuses nothing).
func (s *Server) oauthFail(w http.ResponseWriter, r *http.Request, p broker.Principal, err error) {
	s.oauthAnswer(w, r, p, err, nil)
}

// oauthRefuse answers on an OAuth endpoint a refusal the API makes
// itself, recording it as refuse does (once; callers with no verified
// identity counted as summaries).
func (s *Server) oauthRefuse(w http.ResponseWriter, r *http.Request, p broker.Principal, taskID string, err error) {
	s.oauthAnswer(w, r, p, err, s.recorder(r, p, taskID, err))
}

// oauthAnswer answers err on an OAuth endpoint (RFC 6749 §5.2): 400 with
// {error, error_description, code}; 401 invalid_client with a
// WWW-Authenticate challenge; 429 and 503 with Retry-After. record audits
// a refusal made outside the broker (see problem).
func (s *Server) oauthAnswer(w http.ResponseWriter, r *http.Request, p broker.Principal, err error, record func() error) {
	code := broker.CodeOf(err)
	infoOf(r.Context()).set(func(ri *reqInfo) {
		if ri.code = code; code == "" {
			ri.code = "internal"
		}
	})
	oe, known := oauthErrorOf[code]
	var over *oauthError
	if errors.As(err, &over) {
		oe = over.error
	}
	status := http.StatusBadRequest
	switch {
	case !known:
		s.log.ErrorContext(r.Context(), "internal error", "op", op(r), "err", err)
		writeOAuthError(w, http.StatusInternalServerError, api.OAuthError{Error: "server_error", Code: "internal"})
		return
	case code == "unavailable":
		s.log.WarnContext(r.Context(), "dependency unavailable", "op", op(r), "err", err)
		w.Header().Set("Retry-After", RetryAfterSeconds)
		writeOAuthError(w, http.StatusServiceUnavailable, api.OAuthError{Error: oe, Code: code})
		return
	case errors.As(err, new(*throttled)):
		ra, _ := retryAfter(err)
		s.metrics.refusals.WithLabelValues(code).Inc()
		w.Header().Set("Retry-After", ra)
		writeOAuthError(w, http.StatusTooManyRequests, api.OAuthError{Error: oe, Code: code})
		return
	case oe == "invalid_client":
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="errand", error="invalid_client"`)
	}
	switch {
	case code == broker.ErrAuthorizationPending.Code:
	case p.Kind == "":
		s.anon.note(s.anonSource(r), code, time.Now())
	case record != nil:
		if aerr := record(); aerr != nil {
			s.log.ErrorContext(r.Context(), "cannot audit refusal", "op", op(r), "code", code, "err", aerr)
			w.Header().Set("Retry-After", RetryAfterSeconds)
			w.Header().Del("WWW-Authenticate")
			writeOAuthError(w, http.StatusServiceUnavailable, api.OAuthError{Error: "temporarily_unavailable", Code: "unavailable"})
			return
		}
	}
	s.metrics.refusals.WithLabelValues(code).Inc()
	out := api.OAuthError{Error: oe, Code: code}
	if be := (*broker.Error)(nil); errors.As(err, &be) {
		out.ApprovalID = be.ApprovalID
		out.ApprovalURL = s.approvalURL(out.ApprovalID)
	}
	writeOAuthError(w, status, out)
}

// writeOAuthError writes e, its description the fixed text of its code.
func writeOAuthError(w http.ResponseWriter, status int, e api.OAuthError) {
	if e.ErrorDescription == "" {
		e.ErrorDescription = oauthDescriptions[e.Code]
	}
	if len(e.ErrorDescription) > maxOAuthDescription {
		e.ErrorDescription = e.ErrorDescription[:maxOAuthDescription]
	}
	noStore(w)
	encodeJSON(w, status, e)
}
