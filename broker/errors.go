package broker

import (
	"errors"
	"fmt"
)

// Error is a refusal with a stable machine-readable code. The codes are the
// contract of DESIGN.md's refusal table; httpapi maps each to a status.
type Error struct {
	Code   string
	Detail string
	// Policies are the policies behind a policy_denied, dpop_required or
	// approval_required refusal; Reasons the @step_up texts the user is
	// shown; ApprovalID the step-up approval the refusal waits for (or the
	// denial that stands in its way). They are extension members of the
	// problem (RFC 9457 §3.2) and are recorded in the refusal's audit event.
	Policies   []string
	Reasons    []string
	ApprovalID string
	// TaskID is the task the refusal concerns when the caller could not
	// name it (a backchannel poll names an auth_req_id): it goes to the
	// audit event, never to the answer.
	TaskID string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code
	}
	return e.Code + ": " + e.Detail
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, ErrTaskNotActive) holds for any detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinel refusals. Wrap them with Errorf to add a detail.
var (
	ErrInvalidRequest       = &Error{Code: "invalid_request"}
	ErrInvalidScope         = &Error{Code: "invalid_scope"}
	ErrInvalidToken         = &Error{Code: "invalid_token"}
	ErrTokenNotAccepted     = &Error{Code: "token_not_accepted"}
	ErrWrongPrincipalKind   = &Error{Code: "wrong_principal_kind"}
	ErrNotTaskParty         = &Error{Code: "not_task_party"}
	ErrApprovalForbidden    = &Error{Code: "approval_forbidden"}
	ErrScopeExceedsRequest  = &Error{Code: "scope_exceeds_request"}
	ErrScopeExceedsGrant    = &Error{Code: "scope_exceeds_grant"}
	ErrScopeExceedsApproval = &Error{Code: "scope_exceeds_approval"}
	ErrBlockedAction        = &Error{Code: "blocked_action"}
	ErrTaskNotActive        = &Error{Code: "task_not_active"}
	ErrTaskImmutable        = &Error{Code: "task_immutable"}
	// ErrTaskChanged: an approval or denial named a version or digest the
	// task no longer has.
	ErrTaskChanged = &Error{Code: "task_changed"}
	// ErrAgentSuspended: the agent is suspended by the kill switch.
	ErrAgentSuspended = &Error{Code: "agent_suspended"}
	// ErrRateLimited: too many requests, or too many pending tasks.
	ErrRateLimited = &Error{Code: "rate_limited"}
	// ErrIdempotencyConflict: an Idempotency-Key reused with another body.
	ErrIdempotencyConflict = &Error{Code: "idempotency_conflict"}
	ErrBodyTooLarge        = &Error{Code: "body_too_large"}
	// ErrPolicyDenied: a policy forbids the request, or none permits it, or
	// the policies could not be evaluated.
	ErrPolicyDenied = &Error{Code: "policy_denied"}
	// ErrApprovalRequired: a @step_up policy needs the user to approve this
	// exact request; the refusal names the pending approval.
	ErrApprovalRequired = &Error{Code: "approval_required"}
	// ErrBudgetExhausted: the task minted as many credentials, or touched
	// as many distinct resources, as its budget allows.
	ErrBudgetExhausted = &Error{Code: "budget_exhausted"}
	ErrNotFound        = &Error{Code: "not_found"}
	// ErrUnavailable means a dependency (the database, an identity
	// provider's keys, Vault) could not be reached. It is never reported
	// as an authentication failure.
	ErrUnavailable = &Error{Code: "unavailable"}
)

// Errorf returns a refusal with the code of sentinel and a formatted detail.
func Errorf(sentinel *Error, format string, args ...any) error {
	return &Error{Code: sentinel.Code, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf returns the refusal code carried by err, or "" when err is not a
// refusal (an internal error).
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
