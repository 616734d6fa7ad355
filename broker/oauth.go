package broker

// Refusals of the OAuth front door (RFC 6749 §5.2, RFC 8693 §2.2.2,
// RFC 8707 §2, OpenID CIBA §11). Their codes are also the OAuth error
// they are answered with; httpapi maps the other codes once.
var (
	// ErrInvalidTarget: a resource or audience that is not a configured
	// audience after normalisation, or not one the task's approval names
	// (RFC 8707 §2).
	ErrInvalidTarget = &Error{Code: "invalid_target"}
	// ErrInvalidGrant: an auth_req_id that is unknown, another agent's or
	// already used (CIBA §11).
	ErrInvalidGrant = &Error{Code: "invalid_grant"}
	// ErrUnsupportedGrantType: a grant_type the token endpoint does not
	// offer.
	ErrUnsupportedGrantType = &Error{Code: "unsupported_grant_type"}
	// ErrUnsupportedTokenType: a requested_token_type (or
	// subject_token_type) Errand does not exchange (RFC 8693 §2.2.2).
	ErrUnsupportedTokenType = &Error{Code: "unsupported_token_type"}
	// ErrAuthorizationPending: the user has not decided the backchannel
	// request yet (CIBA §11). An answer, not a refusal: it is not audited.
	ErrAuthorizationPending = &Error{Code: "authorization_pending"}
	// ErrSlowDown: the backchannel request was polled before its interval
	// passed; the interval grew by BackchannelIntervalStep.
	ErrSlowDown = &Error{Code: "slow_down"}
	// ErrExpiredToken: the backchannel request (its task) expired before
	// the user approved it.
	ErrExpiredToken = &Error{Code: "expired_token"}
	// ErrAccessDenied: the user denied the backchannel request's task.
	ErrAccessDenied = &Error{Code: "access_denied"}
)
