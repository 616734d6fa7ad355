package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// DefaultStepUpTTL bounds how long a step-up approval waits for the user
// and, once approved, how long it may be used.
const DefaultStepUpTTL = 15 * time.Minute

// maxPendingStepUps caps the step-up approvals one task may have waiting,
// so that an agent cannot flood its user.
const maxPendingStepUps = 5

// StepUpStatus is a step-up approval's state: pending → approved | denied;
// approved → used. Past its expiry a pending or approved one is expired.
type StepUpStatus string

const (
	StepUpPending  StepUpStatus = "pending"
	StepUpApproved StepUpStatus = "approved"
	StepUpDenied   StepUpStatus = "denied"
	StepUpUsed     StepUpStatus = "used"
	StepUpExpired  StepUpStatus = "expired" // shown, never stored
)

// StepUp is a step-up approval: what a @step_up policy asks the user for,
// to carry out one exact request (scopes, audience, tool, dataset) of an
// approved task once. In Go it is always a StepUp (Approve and
// ApproveRequest are the task's own approval); outside, the REST API and
// the pages call it an approval (/v1/approvals, ids apr_…, audit events
// approval.*, the refusal approval_required), and so do the docs.
type StepUp struct {
	ID          string
	Seq         int64
	TaskID      string
	Agent, User Ref
	Scopes      Scopes
	Audience    string
	Tool        string
	Dataset     string
	// RequestHash binds the approval to the request (stepUpHash).
	RequestHash string
	Policies    []string
	Reasons     []string
	Status      StepUpStatus
	DenyReason  string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	DecidedAt   time.Time // zero until approved or denied
	UsedAt      time.Time // zero until used
}

// EffectiveStatus is the status at now.
func (u StepUp) EffectiveStatus(now time.Time) StepUpStatus {
	if (u.Status == StepUpPending || u.Status == StepUpApproved) && !now.Before(u.ExpiresAt) {
		return StepUpExpired
	}
	return u.Status
}

// StepUpFilter selects step-up approvals in Seq order.
type StepUpFilter struct {
	Agent, User *Ref // exactly one is set
	Status      StepUpStatus
	Now         time.Time
	AfterSeq    int64
	Limit       int
}

// StepUpTx is what step-up approvals and budgets need of a transaction.
type StepUpTx interface {
	InsertStepUp(ctx context.Context, u *StepUp) error
	// OpenStepUp locks the newest pending or approved step-up of the task
	// for the request hash that is unexpired at now; ErrNotFound.
	OpenStepUp(ctx context.Context, taskID, hash string, now time.Time) (StepUp, error)
	// DeniedStepUps lists the task's step-ups that the user denied and did
	// not lift since (no later step-up of the same request was approved),
	// newest first, at most MaxDenials.
	DeniedStepUps(ctx context.Context, taskID string) ([]StepUp, error)
	// PendingStepUps counts the task's pending, unexpired step-ups.
	PendingStepUps(ctx context.Context, taskID string, now time.Time) (int, error)
	// ReadStepUp reads a step-up, locking it when forUpdate; ErrNotFound.
	ReadStepUp(ctx context.Context, id string, forUpdate bool) (StepUp, error)
	UpdateStepUp(ctx context.Context, u StepUp) error
	// MintedScopes returns the scopes of each of the task's credentials of
	// the given kinds, for its budget.
	MintedScopes(ctx context.Context, taskID string, kinds []CredentialKind) ([]Scopes, error)
}

// StepUpReader is the read side of step-up approvals.
type StepUpReader interface {
	StepUp(ctx context.Context, id string) (StepUp, error)
	ListStepUps(ctx context.Context, f StepUpFilter) ([]StepUp, error)
}

// Budget bounds what one task may mint; 0 is unlimited.
type Budget struct {
	MaxCredentials int
	MaxResources   int
}

// budgetFor is the budget of a new task: the configured one, lowered (never
// raised) by the request's.
func (s *Service) budgetFor(maxCreds, maxRes int) (Budget, error) {
	if maxCreds < 0 || maxRes < 0 {
		return Budget{}, Errorf(ErrInvalidRequest, "max_credentials and max_resources must be positive")
	}
	lower := func(conf, req int) int {
		switch {
		case req == 0:
			return conf
		case conf == 0:
			return req
		}
		return min(conf, req)
	}
	return Budget{MaxCredentials: lower(s.budget.MaxCredentials, maxCreds), MaxResources: lower(s.budget.MaxResources, maxRes)}, nil
}

// budgetKinds are the credentials a budget counts: what an agent can use,
// not the Vault token Errand keeps for it.
var budgetKinds = []CredentialKind{KindJWT, KindIDJAG, KindVaultLease}

// checkBudget refuses a mint of scopes that would exceed t's budget.
func (s *Service) checkBudget(ctx context.Context, tx Tx, t Task, scopes Scopes) error {
	b := t.Budget
	if b.MaxCredentials == 0 && b.MaxResources == 0 {
		return nil
	}
	minted, err := tx.MintedScopes(ctx, t.ID, budgetKinds)
	if err != nil {
		return err
	}
	if b.MaxCredentials > 0 && len(minted) >= b.MaxCredentials {
		return Errorf(ErrBudgetExhausted, "the task has minted %d of its %d credentials", len(minted), b.MaxCredentials)
	}
	if b.MaxResources > 0 {
		// A pattern reaches resources without number: under a resource
		// budget only concrete resources are minted, so each is counted.
		for _, sc := range scopes {
			if containsWildcard(sc) {
				return Errorf(ErrBudgetExhausted, "the task has a budget of %d resources: mint concrete resources, not %s", b.MaxResources, sc)
			}
		}
		seen := map[string]bool{}
		for _, ss := range minted {
			for _, sc := range ss {
				seen[sc.ResourcePath()] = true
			}
		}
		for _, sc := range scopes {
			seen[sc.ResourcePath()] = true
		}
		if len(seen) > b.MaxResources {
			return Errorf(ErrBudgetExhausted, "the request would bring the task to %d distinct resources; its budget is %d", len(seen), b.MaxResources)
		}
	}
	return nil
}

// stepUpHash binds a step-up approval to one request.
func stepUpHash(op string, scopes Scopes, audience, tool, dataset string) string {
	b, _ := json.Marshal([]any{op, scopes.Strings(), audience, tool, dataset})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// gateRequest is a request to issue a credential, as the gate sees it.
type gateRequest struct {
	Op                      string
	Scopes                  Scopes
	Audience, Tool, Dataset string
	// Consume uses an approved step-up (the credential is being recorded
	// in this transaction); without it the gate only checks.
	Consume bool
	// DPoP: the credential will be bound to a DPoP key (context.dpop).
	DPoP bool
	// Decided, when set, is the policies' decision of this request,
	// already taken (decideMint): it is not taken twice.
	Decided *PolicyDecision
}

// gate applies the budget and the policies to an issuance under t's lock.
// It returns the step-up approval used (when a @step_up policy matched and
// the user approved this request), or a refusal to return after the
// transaction commits (approval_required: the new pending approval must be
// kept), or an error that rolls everything back.
func (s *Service) gate(ctx context.Context, tx Tx, p Principal, t Task, now time.Time, g gateRequest) (used string, refusal error, err error) {
	if err := s.checkBudget(ctx, tx, t, g.Scopes); err != nil {
		return "", nil, err
	}
	base := PolicyRequest{
		Operation: g.Op, TaskID: t.ID, Agent: t.Agent, User: t.User, Groups: t.UserGroups,
		Tool: g.Tool, Dataset: g.Dataset, Time: now, DPoP: g.DPoP,
	}
	var d PolicyDecision
	if g.Decided != nil {
		d = *g.Decided
	} else {
		d = s.decideAll(base, g.Scopes, []string{g.Audience})
	}
	switch d.Effect {
	case EffectAllow:
		return "", nil, nil
	case EffectDeny:
		if g.Op == OpMint {
			if err := s.dpopRequiredByPolicy(base, g.Scopes, []string{g.Audience}, d); err != nil {
				return "", nil, err
			}
		}
		return "", nil, policyDenied(d)
	}
	hash := stepUpHash(g.Op, g.Scopes, g.Audience, g.Tool, g.Dataset)
	u, err := tx.OpenStepUp(ctx, t.ID, hash, now)
	switch {
	case err == nil && u.Status == StepUpApproved:
		if g.Consume {
			u.Status, u.UsedAt = StepUpUsed, now
			if err := tx.UpdateStepUp(ctx, u); err != nil {
				return "", nil, err
			}
		}
		return u.ID, nil, nil
	case err == nil:
		return "", approvalRequired(u, "the user has not yet approved this request"), nil
	case !errors.Is(err, ErrNotFound):
		return "", nil, err
	}
	// What the user denied is not asked again within the task, in any
	// form: no approval fatigue by repetition (A07). A request any of
	// whose scopes contains, or is contained in, a denied scope is refused
	// without asking, whatever its tool, dataset, audience or other
	// scopes; the user may lift a denial by approving it explicitly. A new
	// need is a new task.
	denied, err := tx.DeniedStepUps(ctx, t.ID)
	if err != nil {
		return "", nil, err
	}
	if den, ok := deniedOverlap(denied, g.Scopes); ok {
		return "", nil, &Error{Code: ErrPolicyDenied.Code,
			Detail: "the user denied a request overlapping this one (approval " + den.ID + ", asked for by policy " +
				strings.Join(d.Policies, ", ") + "); it is not asked again within this task",
			Policies: nonNilStrings(d.Policies), ApprovalID: den.ID}
	}
	n, err := tx.PendingStepUps(ctx, t.ID, now)
	if err != nil {
		return "", nil, err
	}
	if n >= maxPendingStepUps {
		return "", nil, Errorf(ErrRateLimited, "the task already has %d step-up approvals waiting", n)
	}
	id, err := s.newID("apr_")
	if err != nil {
		return "", nil, err
	}
	u = StepUp{
		ID: id, TaskID: t.ID, Agent: t.Agent, User: t.User, Scopes: g.Scopes,
		Audience: g.Audience, Tool: g.Tool, Dataset: g.Dataset, RequestHash: hash,
		Policies: d.Policies, Reasons: d.Reasons, Status: StepUpPending,
		CreatedAt: now, ExpiresAt: minTime(now.Add(s.stepTTL), t.ExpiresAt),
	}
	if err := tx.InsertStepUp(ctx, &u); err != nil {
		return "", nil, err
	}
	ask := s.taskNotice(EventApprovalRequested, t, now, ActorOf(p))
	ask.ApprovalID, ask.ApprovalScopes, ask.ApprovalAudience = u.ID, u.Scopes.Strings(), u.Audience
	ask.ApprovalTool, ask.ApprovalDataset, ask.ApprovalExpiresAt = u.Tool, u.Dataset, u.ExpiresAt
	if err := s.notify(ctx, tx, ask); err != nil {
		return "", nil, err
	}
	// This event is the refusal's one event: it carries the code, and the
	// refusal is not recorded again (logged).
	if err := tx.AppendAudit(ctx, AuditEvent{
		Time: now, Type: EventApprovalRequested, Actor: ActorOf(p), TaskID: t.ID,
		Detail: detail(map[string]any{
			"code": ErrApprovalRequired.Code, "approval_id": u.ID, "op": g.Op, "scopes": g.Scopes.Strings(), "audience": g.Audience,
			"tool": g.Tool, "dataset": g.Dataset, "policies": d.Policies, "reasons": d.Reasons,
			"expires_at": u.ExpiresAt,
		}),
	}); err != nil {
		return "", nil, err
	}
	return "", &logged{approvalRequired(u, "a policy asks the user to approve this request")}, nil
}

// MaxDenials bounds the denials a gate compares a request with; past it,
// the oldest are not consulted (a task denied that often is better closed).
const MaxDenials = 200

// deniedOverlap finds a denial one of whose scopes contains, or is
// contained in, one of scopes.
func deniedOverlap(denied []StepUp, scopes Scopes) (StepUp, bool) {
	for _, u := range denied {
		for _, d := range u.Scopes {
			for _, sc := range scopes {
				if d.CoveredBy(sc) || sc.CoveredBy(d) {
					return u, true
				}
			}
		}
	}
	return StepUp{}, false
}

func approvalRequired(u StepUp, why string) error {
	msg := why + " (approval " + u.ID + ")"
	if len(u.Reasons) > 0 {
		msg += ": " + strings.Join(u.Reasons, "; ")
	}
	return &Error{Code: ErrApprovalRequired.Code, Detail: msg,
		ApprovalID: u.ID, Policies: nonNilStrings(u.Policies), Reasons: nonNilStrings(u.Reasons)}
}

func nonNilStrings(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// StepUpStatusOf is u's effective status now.
func (s *Service) StepUpStatusOf(u StepUp) StepUpStatus { return u.EffectiveStatus(s.now()) }

// ValidStepUpID reports whether id has the shape of a step-up approval id.
func ValidStepUpID(id string) bool {
	return len(id) == 30 && strings.HasPrefix(id, "apr_") && ValidTaskID("tsk_"+id[4:])
}

// GetStepUp returns a step-up approval to its task's agent or user, or an
// auditor.
func (s *Service) GetStepUp(ctx context.Context, p Principal, id string) (_ StepUp, err error) {
	var about StepUp
	defer func() { err = s.refusedAbout(ctx, p, about, OpReadApproval, err) }()
	if p.Kind == KindResource {
		return StepUp{}, Errorf(ErrWrongPrincipalKind, "resource servers do not read approvals")
	}
	if !ValidStepUpID(id) {
		return StepUp{}, Errorf(ErrNotFound, "no such approval")
	}
	r := s.store
	u, err := r.StepUp(ctx, id)
	if err != nil {
		return StepUp{}, err
	}
	if !p.Is(KindAgent, u.Agent) && !p.Is(KindUser, u.User) && !(p.Kind == KindUser && p.Auditor) {
		about = u
		return StepUp{}, Errorf(ErrNotTaskParty, "caller is neither the task's agent nor its user")
	}
	return u, nil
}

// ListStepUps returns the caller's step-up approvals (as agent or user)
// with the given effective status, oldest first, and whether more remain.
func (s *Service) ListStepUps(ctx context.Context, p Principal, status StepUpStatus, afterSeq int64, limit int) (_ []StepUp, _ bool, err error) {
	defer func() { err = s.refused(ctx, p, "", OpListApprovals, err) }()
	switch status {
	case "", StepUpPending, StepUpApproved, StepUpDenied, StepUpUsed, StepUpExpired:
	default:
		return nil, false, Errorf(ErrInvalidRequest, "unknown status %q", status)
	}
	r := s.store
	now, err := s.readNow(ctx)
	if err != nil {
		return nil, false, err
	}
	f := StepUpFilter{Status: status, Now: now, AfterSeq: afterSeq, Limit: limit}
	if f.User, f.Agent, err = listOwner(p, "approvals"); err != nil {
		return nil, false, err
	}
	us, err := r.ListStepUps(ctx, f)
	if err != nil {
		return nil, false, err
	}
	us, more := page(us, limit)
	return us, more, nil
}

// DecideStepUp approves (or denies, with reason) a pending step-up. Only
// the task's user may, and only while the task is approved and active: a
// step-up never revives a task nor widens it (the mint it allows is still
// held to the approved scopes).
func (s *Service) DecideStepUp(ctx context.Context, p Principal, id string, approve bool, reason string) (_ StepUp, err error) {
	// The refusal names the approval and its task, once read (the URL
	// of an approval names no task).
	var about StepUp
	op := OpDenyStepUp
	if approve {
		op = OpApproveStepUp
	}
	defer func() { err = s.refusedAbout(ctx, p, about, op, err) }()
	if p.Kind != KindUser {
		return StepUp{}, Errorf(ErrApprovalForbidden, "only the task's user may decide an approval; caller is of kind %s", p.Kind)
	}
	if err := checkText("reason", reason, maxReasonBytes, false); err != nil {
		return StepUp{}, err
	}
	if !ValidStepUpID(id) {
		return StepUp{}, Errorf(ErrNotFound, "no such approval")
	}
	var out StepUp
	err = s.store.InTx(ctx, func(tx Tx) error {
		u, err := tx.ReadStepUp(ctx, id, false)
		if err != nil {
			return err
		}
		about = u
		// Lock order task → step-up, as in Mint: take the task's lock, then
		// the step-up's, and decide on what is read under them.
		t, err := tx.LockTask(ctx, u.TaskID)
		if err != nil {
			return err
		}
		if u, err = tx.ReadStepUp(ctx, id, true); err != nil {
			return err
		}
		if !p.Is(KindUser, t.User) {
			return Errorf(ErrApprovalForbidden, "only the task's user may decide this approval")
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if st := t.EffectiveStatus(now); st != StatusApproved {
			return Errorf(ErrTaskNotActive, "the task is %s", st)
		}
		// A pending approval is decided; a denied one may be approved
		// explicitly, which lifts the denial: a new approval of the same
		// request, the denial kept as history (see liftDenial).
		lifting := approve && u.Status == StepUpDenied
		if st := u.EffectiveStatus(now); st != StepUpPending && !lifting {
			return Errorf(ErrTaskNotActive, "the approval is %s", st)
		}
		if err := s.notSuspended(ctx, tx, t.Agent); err != nil {
			return err
		}
		if lifting {
			out, err = s.liftDenial(ctx, tx, p, t, u, now)
			return err
		}
		typ := EventApprovalDenied
		if approve {
			typ = EventApprovalApproved
			u.Status, u.ExpiresAt = StepUpApproved, minTime(now.Add(s.stepTTL), t.ExpiresAt)
		} else {
			u.Status, u.DenyReason = StepUpDenied, reason
		}
		u.DecidedAt = now
		if err := tx.UpdateStepUp(ctx, u); err != nil {
			return err
		}
		out = u
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: typ, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"approval_id": u.ID, "scopes": u.Scopes.Strings(),
				"audience": u.Audience, "tool": u.Tool, "dataset": u.Dataset, "reason": reason,
				"expires_at": u.ExpiresAt}),
		})
	})
	if err != nil {
		return StepUp{}, err
	}
	return out, nil
}

// liftDenial is the user approving a request they denied: a new approval
// of the same request, usable once like any other. The denial stays as it
// was (approvals only move forward); it no longer counts once a later
// approval of its request exists (StepUpTx.DeniedStepUps).
func (s *Service) liftDenial(ctx context.Context, tx Tx, p Principal, t Task, den StepUp, now time.Time) (StepUp, error) {
	id, err := s.newID("apr_")
	if err != nil {
		return StepUp{}, err
	}
	u := den
	u.ID, u.Seq, u.Status, u.DenyReason = id, 0, StepUpApproved, ""
	u.CreatedAt, u.DecidedAt, u.UsedAt = now, now, time.Time{}
	u.ExpiresAt = minTime(now.Add(s.stepTTL), t.ExpiresAt)
	if err := tx.InsertStepUp(ctx, &u); err != nil {
		return StepUp{}, err
	}
	return u, tx.AppendAudit(ctx, AuditEvent{
		Time: now, Type: EventApprovalApproved, Actor: ActorOf(p), TaskID: t.ID,
		Detail: detail(map[string]any{"approval_id": u.ID, "lifts": den.ID, "scopes": u.Scopes.Strings(),
			"audience": u.Audience, "tool": u.Tool, "dataset": u.Dataset, "expires_at": u.ExpiresAt}),
	})
}
