package broker

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Introspection is the RFC 7662 view of a token.
type Introspection struct {
	Active     bool
	Credential Credential
	Token      AccessToken
	Task       Task
	// Now is the time the answer was decided at (the store's clock).
	Now time.Time
}

// Introspect answers whether raw is an active token of Errand's, for a
// resource server (RFC 7662 §2.2). Unknown, expired, revoked and foreign
// tokens are all simply inactive; only an outage is an error.
func (s *Service) Introspect(ctx context.Context, p Principal, raw string) (_ Introspection, err error) {
	defer func() { err = s.refused(ctx, p, "", OpIntrospect, err) }()
	return s.introspect(ctx, p, raw)
}

// introspect is Introspect without recording its refusal: Evaluate
// introspects through it and records its own.
func (s *Service) introspect(ctx context.Context, p Principal, raw string) (Introspection, error) {
	if p.Kind != KindResource {
		return Introspection{}, Errorf(ErrWrongPrincipalKind, "only resource servers introspect")
	}
	at, err := s.tokens.Verify(ctx, raw)
	if err != nil {
		if CodeOf(err) == ErrInvalidToken.Code {
			return Introspection{}, nil
		}
		return Introspection{}, err
	}
	c, t, now, cached := Credential{}, Task{}, time.Time{}, false
	var gen uint64
	if s.cache != nil {
		c, t, now, cached = s.cache.Lookup(at.JTI)
		gen = s.cache.Generation()
	}
	if !cached {
		c, t, now, err = s.store.CredentialAndTask(ctx, at.JTI)
		if errors.Is(err, ErrNotFound) {
			return Introspection{}, nil
		}
		if err != nil {
			return Introspection{}, err
		}
	}
	if !c.RevokedAt.IsZero() || !now.Before(c.ExpiresAt) || c.TaskID != at.TaskID || c.Audience != at.Audience {
		return Introspection{}, nil
	}
	// The record, not the token, says what was issued: a token whose
	// claims differ from its record (signed by a stolen key for a real
	// jti) is not active.
	// A token's cnf.jkt must be its record's too: binding is recorded at
	// the mint, and a token that claims another key, or none, is forged.
	if at.Scope != strings.Join(c.Scopes.Strings(), " ") || !at.ExpiresAt.Equal(c.ExpiresAt) || at.JKT != c.JKT ||
		at.Subject != s.names.User(t.User) || at.ClientID != s.names.Agent(t.Agent) ||
		at.Act != (Ref{Issuer: t.Agent.Issuer, Subject: s.names.Agent(t.Agent)}) {
		return Introspection{}, nil
	}
	if au, ok := s.catalog.Audience(c.Audience); !ok || !introspector(au, p) {
		return Introspection{}, nil
	}
	if t.EffectiveStatus(now) != StatusApproved {
		return Introspection{}, nil
	}
	if s.cache != nil && !cached {
		s.cache.Keep(gen, c, t)
	}
	return Introspection{Active: true, Credential: c, Token: at, Task: t, Now: now}, nil
}

// introspector reports whether p may learn about tokens for au: by
// introspection, or from the revocation feed. Unbound audiences are
// closed unless they opt in, so that no resource server learns about
// another's tokens by default.
func introspector(au Audience, p Principal) bool {
	if p.Kind != KindResource {
		return false
	}
	if au.AnyIntrospector {
		return true
	}
	for _, r := range au.Introspectors {
		if p.Is(KindResource, r) {
			return true
		}
	}
	return false
}
