package broker

import (
	"context"
	"errors"
	"time"
)

// ExchangeRequest is an RFC 8693 token exchange for one more token of a
// task: the task named by the errand_task authorization details (RFC 9396),
// the scopes asked for (nil: every approved scope) and the resource and
// audience values (RFC 8707, RFC 8693 §2.1) naming the token's audience
// (none: the first requested audience the approval kept).
type ExchangeRequest struct {
	TaskID         string
	Scopes         []string
	Targets        []string
	IdempotencyKey string
	// JKT binds the token to a DPoP key (MintRequest.JKT).
	JKT string
}

// Exchange mints a token for an RFC 8693 token exchange through Mint, so
// that every check, policy, budget, step-up and audit event of a REST mint
// applies unchanged. The targets are resolved to configured audiences
// (ErrInvalidTarget for an unknown one, or for more than one audience: a
// token has one); an audience the task's approval does not name is
// ErrInvalidTarget too (RFC 8693 §2.2.2), not a scope refusal.
func (s *Service) Exchange(ctx context.Context, p Principal, req ExchangeRequest) (_ Minted, err error) {
	defer func() { err = s.refused(ctx, p, req.TaskID, OpExchange, err) }()
	if p.Kind != KindAgent {
		return Minted{}, Errorf(ErrWrongPrincipalKind, "only agents exchange tokens")
	}
	if err := notFoundUnlessValid(req.TaskID); err != nil {
		return Minted{}, err
	}
	audience := ""
	for _, raw := range req.Targets {
		a, err := s.catalog.ResolveResource(raw)
		if err != nil {
			return Minted{}, err
		}
		if audience != "" && a != audience {
			return Minted{}, Errorf(ErrInvalidTarget, "a token has one audience; name one resource")
		}
		audience = a
	}
	var task *Task
	readTask := func() (Task, error) {
		if task == nil {
			t, err := s.store.Task(ctx, req.TaskID)
			if err != nil {
				return Task{}, err
			}
			if !p.Is(KindAgent, t.Agent) {
				return Task{}, Errorf(ErrNotTaskParty, "the task belongs to another agent")
			}
			task = &t
		}
		return *task, nil
	}
	scopes := req.Scopes
	if scopes == nil || audience == "" {
		t, err := readTask()
		if err != nil {
			return Minted{}, err
		}
		if st := t.EffectiveStatus(s.now()); st != StatusApproved {
			return Minted{}, Errorf(ErrTaskNotActive, "the task is %s", st)
		}
		if scopes == nil {
			scopes = t.ApprovedScopes.Strings()
		}
		if audience == "" {
			audience = firstApproved(t)
		}
	}
	m, err := s.mint(ctx, p, req.TaskID, MintRequest{Scopes: scopes, Audience: audience, IdempotencyKey: req.IdempotencyKey, JKT: req.JKT})
	if errors.Is(err, ErrScopeExceedsApproval) {
		if t, rerr := readTask(); rerr == nil && !contains(t.ApprovedAudiences, audience) {
			return Minted{}, Errorf(ErrInvalidTarget, "the task's approval does not name this audience")
		}
	}
	return m, err
}

// firstApproved is the first audience the task asked for that its
// approval kept ("" when none).
func firstApproved(t Task) string {
	for _, a := range t.Audiences {
		if contains(t.ApprovedAudiences, a) {
			return a
		}
	}
	return ""
}

// FirstUse records the identifier of a JWT whose reuse is refused
// (RFC 7523 §3, RFC 9449 §11.1), qualified by the JWT's issuer, until the
// JWT expires (and ReplaySkew more): ErrInvalidToken when the same kind,
// issuer and jti were recorded before and have not expired. Shared by
// replicas (ReplayCache).
func (s *Service) FirstUse(ctx context.Context, kind, issuer, jti string, exp time.Time) error {
	fresh, err := s.RememberJTI(ctx, kind, issuer+"\x00"+jti, exp)
	if err != nil {
		return err
	}
	if !fresh {
		return Errorf(ErrInvalidToken, "the %s's jti was used before", kind)
	}
	return nil
}
