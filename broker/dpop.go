package broker

import (
	"context"
	"strings"
	"time"
)

// Refusals of DPoP (RFC 9449). A proof itself is checked at the HTTP edge
// (package dpop), which passes the broker only the thumbprint of a valid
// proof's key (MintRequest.JKT).
var (
	// ErrInvalidDPoPProof: a DPoP proof was sent and is not valid for this
	// request (RFC 9449 §5: the OAuth error invalid_dpop_proof).
	ErrInvalidDPoPProof = &Error{Code: "invalid_dpop_proof"}
	// ErrDPoPRequired: the task, or a policy, requires a DPoP-bound token
	// and the request carried no proof.
	ErrDPoPRequired = &Error{Code: "dpop_required"}
	// ErrUseDPoPNonce: server nonces are required and the proof, valid
	// otherwise, has no current one; the answer carries a fresh nonce in
	// the DPoP-Nonce header (RFC 9449 §8).
	ErrUseDPoPNonce = &Error{Code: "use_dpop_nonce"}
)

// dpopRequiredByPolicy is the refusal of a request without a proof that
// the policies denied (d) only because it has none: the same request with
// a proof would not be denied. nil when a proof would not help.
func (s *Service) dpopRequiredByPolicy(base PolicyRequest, scopes Scopes, audiences []string, d PolicyDecision) error {
	if base.DPoP || d.Effect != EffectDeny {
		return nil
	}
	base.DPoP = true
	if s.decideAll(base, scopes, audiences).Effect == EffectDeny {
		return nil
	}
	return &Error{Code: ErrDPoPRequired.Code,
		Detail:   "policy " + strings.Join(d.Policies, ", ") + " requires a DPoP-bound token: send a DPoP proof",
		Policies: nonNilStrings(d.Policies)}
}

// ReplaySkew is how much longer than its caller asks the replay cache
// keeps an identifier. The caller computes the expiry on its replica's
// clock, and the store expires entries on the database's: a replica
// whose clock lags the database's by d still accepts a proof (or an
// assertion) for d after the database would have forgotten it. Replicas'
// clocks must stay within ReplaySkew of the database's (NTP does).
const ReplaySkew = 5 * time.Minute

// RememberJTI is the store's ReplayCache, shared by every replica, for the
// identifiers the HTTP edge must see only once: DPoP proofs
// (ReplayDPoP), client assertions (ReplayClientAssertion). It keeps each
// ReplaySkew past expiresAt.
func (s *Service) RememberJTI(ctx context.Context, kind, jti string, expiresAt time.Time) (bool, error) {
	return s.store.RememberJTI(ctx, kind, jti, expiresAt.Add(ReplaySkew))
}

var _ ReplayCache = (*Service)(nil)
