package broker

import (
	"context"
)

// AuditEvents returns audit events to an auditor.
func (s *Service) AuditEvents(ctx context.Context, p Principal, f HistoryFilter) (_ []AuditEvent, _ bool, err error) {
	defer func() { err = s.refused(ctx, p, "", OpReadAudit, err) }()
	if err := s.auditor(p, f); err != nil {
		return nil, false, err
	}
	if f.Type != "" && !contains(EventTypes, f.Type) {
		return nil, false, Errorf(ErrInvalidRequest, "unknown event type %q", f.Type)
	}
	evs, err := s.store.AuditEvents(ctx, f)
	if err != nil {
		return nil, false, err
	}
	evs, more := page(evs, f.Limit)
	return evs, more, nil
}

// Credentials returns the issuance history to an auditor.
func (s *Service) Credentials(ctx context.Context, p Principal, f HistoryFilter) (_ []Credential, _ bool, err error) {
	defer func() { err = s.refused(ctx, p, "", OpReadIssuance, err) }()
	if err := s.auditor(p, f); err != nil {
		return nil, false, err
	}
	if k := CredentialKind(f.Type); k != "" && k != KindJWT && k != KindIDJAG && k != KindVaultToken && k != KindVaultLease {
		return nil, false, Errorf(ErrInvalidRequest, "unknown credential kind %q", f.Type)
	}
	cs, err := s.store.Credentials(ctx, f)
	if err != nil {
		return nil, false, err
	}
	cs, more := page(cs, f.Limit)
	return cs, more, nil
}

func (s *Service) auditor(p Principal, f HistoryFilter) error {
	if p.Kind != KindUser || !p.Auditor {
		return Errorf(ErrWrongPrincipalKind, "only auditors read the history")
	}
	if f.Limit < 1 {
		return Errorf(ErrInvalidRequest, "limit must be positive")
	}
	return nil
}

// History is one task's timeline for an auditor.
type History struct {
	Task        Task
	Events      []AuditEvent
	Credentials []Credential
	Truncated   bool
}

// TaskHistory returns a task's whole story: the request, the decision, each
// credential, every refusal and revocation, in commit order.
func (s *Service) TaskHistory(ctx context.Context, p Principal, id string) (_ History, err error) {
	defer func() { err = s.refused(ctx, p, id, OpReadHistory, err) }()
	if err := s.auditor(p, HistoryFilter{Limit: 1}); err != nil {
		return History{}, err
	}
	if err := notFoundUnlessValid(id); err != nil {
		return History{}, err
	}
	t, err := s.store.Task(ctx, id)
	if err != nil {
		return History{}, err
	}
	evs, err := s.store.AuditEvents(ctx, HistoryFilter{TaskID: id, Limit: maxHistory})
	if err != nil {
		return History{}, err
	}
	cs, err := s.store.Credentials(ctx, HistoryFilter{TaskID: id, Limit: maxHistory})
	if err != nil {
		return History{}, err
	}
	h := History{Task: t, Events: evs, Credentials: cs}
	if len(evs) > maxHistory || len(cs) > maxHistory {
		h.Truncated = true
		h.Events, h.Credentials = evs[:min(len(evs), maxHistory)], cs[:min(len(cs), maxHistory)]
	}
	return h, nil
}
