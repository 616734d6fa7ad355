package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of DESIGN.md's limits.
const (
	DefaultTokenTTLMax = 5 * time.Minute
	DefaultTaskTTLMax  = 8 * time.Hour
	// DefaultMaxPendingPerAgent is the default cap of pending tasks per agent.
	DefaultMaxPendingPerAgent = 20
	defaultTaskTTL            = time.Hour
	maxGoalBytes              = 4096
	maxAudiences              = 16
	maxReasonBytes            = 1024
	maxLabelBytes             = 256
)

// Config configures a Service. Store, Tokens and Catalog are required.
type Config struct {
	Store   Store
	Tokens  TokenIssuer
	Catalog *Catalog
	// UserIssuers are the URLs of the issuers of kind user, used to resolve
	// on_behalf_of.
	UserIssuers []string
	// AgentIssuers are the URLs of the issuers of kind agent. With several
	// issuers of a kind, tokens name its principals <issuer>#<sub> (Naming).
	AgentIssuers []string
	TokenTTLMax  time.Duration // default 5 min
	TaskTTLMax   time.Duration // default 8 h
	// MaxPendingPerAgent caps an agent's tasks awaiting a decision, so that
	// an agent cannot flood its users with approvals; default 20.
	MaxPendingPerAgent int
	// Secrets, when set, issues Vault dynamic secrets for SecretRoles.
	Secrets     SecretIssuer
	SecretRoles []SecretRole
	// BackendKinds are the credential kinds whose revocation a backend
	// must carry out (through the outbox) when their task ends.
	BackendKinds []string
	// Policy, when set, decides every task, approval, mint, secret and
	// evaluation on top of the invariants (package policy: Cedar or Rego).
	Policy Policy
	// CredentialsPerTask and ResourcesPerTask are the default budgets of a
	// task: how many credentials it may mint, and over how many distinct
	// resources; 0 is unlimited. A task request may only lower them.
	CredentialsPerTask int
	ResourcesPerTask   int
	// StepUpTTL bounds how long a step-up approval waits and, once
	// approved, how long it may be used; default 15 min.
	StepUpTTL time.Duration
	// Cache, when set, answers introspection of active tokens from memory
	// (see StatusCache).
	Cache StatusCache
	// IDJAGTargets are the authorization servers Errand issues ID-JAGs
	// for; Tokens must then be an IDJAGSigner.
	IDJAGTargets []IDJAGTarget
	// Webhooks receive notices of the events they subscribe to (NoticeTypes),
	// queued in the transaction of each change; the store's Tx must then be
	// a NoticeTx.
	Webhooks []Webhook
	// Now is this replica's clock, for what is not decided against the
	// store (every expiry decision takes the store's clock); default
	// time.Now.
	Now func() time.Time
	// Random is the source of identifiers; default crypto/rand.
	Random io.Reader
}

// Service carries out Errand's use cases and enforces its invariants.
type Service struct {
	store   Store
	tokens  TokenIssuer
	catalog *Catalog
	users   []string
	names   Naming
	tokMax  time.Duration
	taskMax time.Duration
	pending int
	clock   func() time.Time
	random  io.Reader
	secrets SecretIssuer
	idjag   map[string]IDJAGTarget
	roles   map[string]SecretRole
	backend map[string]bool
	policy  Policy
	budget  Budget
	stepTTL time.Duration
	cache   StatusCache
	// webhooks subscribe to notices (notice.go).
	webhooks []Webhook
	snaps    taskSnaps
	dbClock  dbClock
	// quickMints counts the fast path's mints.
	quickMints atomic.Uint64
}

// NewService validates cfg and returns a Service.
func NewService(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Tokens == nil || cfg.Catalog == nil {
		return nil, errors.New("broker: Store, Tokens and Catalog are required")
	}
	s := &Service{
		store: cfg.Store, tokens: cfg.Tokens, catalog: cfg.Catalog,
		users: cfg.UserIssuers, tokMax: cfg.TokenTTLMax, taskMax: cfg.TaskTTLMax,
		names: Naming{Users: cfg.UserIssuers, Agents: cfg.AgentIssuers},
		clock: cfg.Now, random: cfg.Random, pending: cfg.MaxPendingPerAgent,
		policy: cfg.Policy, stepTTL: cfg.StepUpTTL, cache: cfg.Cache,
		budget: Budget{MaxCredentials: cfg.CredentialsPerTask, MaxResources: cfg.ResourcesPerTask},
	}
	for _, w := range cfg.Webhooks {
		if w.Key == "" {
			return nil, errors.New("broker: a webhook needs a key")
		}
		for _, e := range w.Events {
			if !slices.Contains(NoticeTypes, e) {
				return nil, fmt.Errorf("broker: webhook event %q is not one of %v", e, NoticeTypes)
			}
		}
		s.webhooks = append(s.webhooks, Webhook{Key: w.Key, Events: slices.Clone(w.Events)})
	}
	if s.budget.MaxCredentials < 0 || s.budget.MaxResources < 0 {
		return nil, errors.New("broker: budgets must not be negative")
	}
	var err error
	if s.idjag, err = validIDJAGTargets(cfg.IDJAGTargets, cfg.Tokens, cfg.Catalog); err != nil {
		return nil, err
	}
	if s.stepTTL <= 0 {
		s.stepTTL = DefaultStepUpTTL
	}
	if s.pending <= 0 {
		s.pending = DefaultMaxPendingPerAgent
	}
	s.secrets, s.roles, s.backend = cfg.Secrets, map[string]SecretRole{}, map[string]bool{}
	for _, r := range cfg.SecretRoles {
		s.roles[r.Name] = r
	}
	for _, k := range cfg.BackendKinds {
		s.backend[k] = true
	}
	if s.tokMax <= 0 {
		s.tokMax = DefaultTokenTTLMax
	}
	if s.taskMax <= 0 {
		s.taskMax = DefaultTaskTTLMax
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.random == nil {
		s.random = rand.Reader
	}
	return s, nil
}

// Catalog returns the catalog the service decides against.
func (s *Service) Catalog() *Catalog { return s.catalog }

func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// txNow is the time of a decision inside tx: the database's clock.
func (s *Service) txNow(ctx context.Context, tx Tx) (time.Time, error) {
	t, err := tx.Now(ctx)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC().Truncate(time.Microsecond), nil
}

// readNow is the time of a decision outside a transaction: the
// database's clock.
func (s *Service) readNow(ctx context.Context) (time.Time, error) {
	t, err := s.store.Now(ctx)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC().Truncate(time.Microsecond), nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix + 128 random bits.
func (s *Service) newID(prefix string) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.random, b[:]); err != nil {
		return "", fmt.Errorf("broker: random: %w", err)
	}
	return prefix + idEncoding.EncodeToString(b[:]), nil
}

// HashID is how credential identifiers appear in the audit trail.
func HashID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func detail(v map[string]any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("broker: audit detail not encodable: " + err.Error())
	}
	return b
}

// CreateTaskRequest is an agent's request for a task.
type CreateTaskRequest struct {
	OnBehalfOf string
	Goal       string
	Scopes     []string
	Audiences  []string
	TTLSeconds int64
	Tool       string
	Dataset    string
	// MaxCredentials and MaxResources lower the configured budget (0: as
	// configured).
	MaxCredentials int
	MaxResources   int
	// RequireDPoP makes every token of the task DPoP-bound.
	RequireDPoP bool
}

// CreateTask records a pending task for the calling agent.
func (s *Service) CreateTask(ctx context.Context, p Principal, req CreateTaskRequest) (Task, error) {
	return s.createTask(ctx, p, req, nil)
}

// createTask is CreateTask; also, when set, writes what else belongs to
// the new task (a backchannel request) in the transaction that inserts it.
func (s *Service) createTask(ctx context.Context, p Principal, req CreateTaskRequest, also func(Tx, Task) error) (Task, error) {
	if p.Kind != KindAgent {
		return Task{}, Errorf(ErrWrongPrincipalKind, "only agents create tasks")
	}
	user, err := s.resolveUser(req.OnBehalfOf)
	if err != nil {
		return Task{}, err
	}
	if err := checkText("goal", req.Goal, maxGoalBytes, true); err != nil {
		return Task{}, err
	}
	if err := checkText("tool", req.Tool, maxLabelBytes, false); err != nil {
		return Task{}, err
	}
	if err := checkText("dataset", req.Dataset, maxLabelBytes, false); err != nil {
		return Task{}, err
	}
	scopes, err := ParseScopes(req.Scopes)
	if err != nil {
		return Task{}, err
	}
	if err := s.catalog.CheckGrantable(scopes); err != nil {
		return Task{}, err
	}
	auds, err := s.audiences(req.Audiences)
	if err != nil {
		return Task{}, err
	}
	scopes = s.catalog.Canonical(scopes, auds...)
	ttl, capped, err := s.taskTTL(req.TTLSeconds)
	if err != nil {
		return Task{}, err
	}
	budget, err := s.budgetFor(req.MaxCredentials, req.MaxResources)
	if err != nil {
		return Task{}, err
	}
	now, err := s.readNow(ctx)
	if err != nil {
		return Task{}, err
	}
	agent := p.Ref()
	id, err := s.newID("tsk_")
	if err != nil {
		return Task{}, err
	}
	// A step-up outcome lets the task be asked for: the user approves the
	// task anyway, and a step-up policy speaks again at each mint.
	d := s.decideAll(PolicyRequest{Operation: OpCreate, TaskID: id, Agent: agent, User: user,
		Tool: req.Tool, Dataset: req.Dataset, Time: now, DPoP: req.RequireDPoP}, scopes, auds)
	if d.Effect == EffectDeny {
		return Task{}, policyDenied(d)
	}
	t := Task{
		ID: id, Version: 1, Status: StatusPending,
		Agent: p.Ref(), User: user,
		Goal: req.Goal, Scopes: scopes, Audiences: auds,
		Risk: s.catalog.Risk(scopes), Tool: req.Tool, Dataset: req.Dataset,
		TTLCapped: capped, CreatedAt: now, ExpiresAt: now.Add(ttl), Budget: budget,
		RequireDPoP: req.RequireDPoP,
	}
	err = s.store.InTx(ctx, func(tx Tx) error {
		// The suspension and the pending cap are read under the agent's
		// lock, in the transaction that inserts: read outside it, two
		// concurrent creates could both see room under the cap, and a
		// create could miss a suspension committed while it decided.
		suspended, waiting, err := tx.LockAgent(ctx, agent, now, s.pending)
		if err != nil {
			return err
		}
		if suspended {
			return Errorf(ErrAgentSuspended, "the agent is suspended")
		}
		if waiting >= s.pending {
			return Errorf(ErrRateLimited, "the agent already has %d tasks awaiting a decision", s.pending)
		}
		if err := tx.InsertTask(ctx, &t); err != nil {
			return err
		}
		if also != nil {
			if err := also(tx, t); err != nil {
				return err
			}
		}
		if err := s.notify(ctx, tx, s.taskNotice(EventTaskCreated, t, now, ActorOf(p))); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventTaskCreated, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{
				"on_behalf_of": user.String(), "goal": t.Goal, "scopes": scopes.Strings(),
				"audiences": auds, "expires_at": t.ExpiresAt, "ttl_capped": capped,
				"risk": t.Risk, "tool": t.Tool, "dataset": t.Dataset,
				"max_credentials": budget.MaxCredentials, "max_resources": budget.MaxResources,
				"step_up_policies": d.stepUpPolicies(), "require_dpop": t.RequireDPoP,
			}),
		})
	})
	if err != nil {
		return Task{}, err
	}
	return t, nil
}

func (s *Service) resolveUser(obo string) (Ref, error) {
	if obo == "" {
		return Ref{}, Errorf(ErrInvalidRequest, "on_behalf_of is required")
	}
	if err := checkText("on_behalf_of", obo, 1024, true); err != nil || strings.ContainsAny(obo, "\n\t ") {
		return Ref{}, Errorf(ErrInvalidRequest, "on_behalf_of is malformed")
	}
	if iss, sub, ok := strings.Cut(obo, "#"); ok {
		for _, u := range s.users {
			if u == iss && sub != "" {
				return Ref{Issuer: iss, Subject: sub}, nil
			}
		}
		return Ref{}, Errorf(ErrInvalidRequest, "on_behalf_of names an issuer that is not a configured user issuer")
	}
	switch len(s.users) {
	case 0:
		return Ref{}, Errorf(ErrInvalidRequest, "no user issuer is configured")
	case 1:
		return Ref{Issuer: s.users[0], Subject: obo}, nil
	}
	return Ref{}, Errorf(ErrInvalidRequest, "several user issuers are configured: write on_behalf_of as <issuer URL>#<sub>")
}

// lockForIssue locks task id for an issuance by agent p: the task is p's,
// p is not suspended, and now is the decision's time (all read under the
// task's lock, together).
func (s *Service) lockForIssue(ctx context.Context, tx Tx, p Principal, id string) (Task, time.Time, error) {
	t, suspended, now, err := tx.LockTaskChecked(ctx, id)
	switch {
	case err != nil:
		return Task{}, time.Time{}, err
	case !p.Is(KindAgent, t.Agent):
		return Task{}, time.Time{}, Errorf(ErrNotTaskParty, "the task belongs to another agent")
	case suspended:
		return Task{}, time.Time{}, Errorf(ErrAgentSuspended, "the agent is suspended")
	}
	return t, now.UTC().Truncate(time.Microsecond), nil
}

// notSuspended refuses an agent under the kill switch, reading inside tx
// (a read on another connection could wait forever for the one tx holds).
func (s *Service) notSuspended(ctx context.Context, tx Tx, agent Ref) error {
	suspended, err := tx.IsSuspended(ctx, agent)
	if err != nil {
		return err
	}
	if suspended {
		return Errorf(ErrAgentSuspended, "the agent is suspended")
	}
	return nil
}

// ValidTaskID reports whether id has the shape of a task id; anything else
// is not found without a lookup.
func ValidTaskID(id string) bool {
	if len(id) != 30 || !strings.HasPrefix(id, "tsk_") {
		return false
	}
	for _, c := range id[4:] {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func notFoundUnlessValid(id string) error {
	if !ValidTaskID(id) {
		return Errorf(ErrNotFound, "no such task")
	}
	return nil
}

// audiences validates a requested audience list against the catalog.
func (s *Service) audiences(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, Errorf(ErrInvalidRequest, "audiences is required")
	}
	if len(in) > maxAudiences {
		return nil, Errorf(ErrInvalidRequest, "more than %d audiences", maxAudiences)
	}
	seen := map[string]bool{}
	var out []string
	for _, a := range in {
		if _, ok := s.catalog.Audience(a); !ok {
			return nil, Errorf(ErrInvalidRequest, "unknown audience %q", a)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

func (s *Service) taskTTL(sec int64) (time.Duration, bool, error) {
	switch {
	case sec < 0:
		return 0, false, Errorf(ErrInvalidRequest, "ttl_seconds must be positive")
	case sec == 0:
		return min(defaultTaskTTL, s.taskMax), false, nil
	case sec > int64(s.taskMax/time.Second):
		return s.taskMax, true, nil
	}
	return time.Duration(sec) * time.Second, false, nil
}

// GetTask returns a task to its agent, its user or an auditor.
func (s *Service) GetTask(ctx context.Context, p Principal, id string) (Task, error) {
	if p.Kind == KindResource {
		return Task{}, Errorf(ErrWrongPrincipalKind, "resource servers do not read tasks")
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, err
	}
	t, err := s.store.Task(ctx, id)
	if err != nil {
		return Task{}, err
	}
	if !p.Is(KindAgent, t.Agent) && !p.Is(KindUser, t.User) && !(p.Kind == KindUser && p.Auditor) {
		return Task{}, Errorf(ErrNotTaskParty, "caller is neither the task's agent nor its user")
	}
	return t, nil
}

// ListTasks returns the caller's tasks (as agent or as user) with the given
// effective status, oldest first, and whether more remain.
func (s *Service) ListTasks(ctx context.Context, p Principal, status Status, afterSeq int64, limit int) ([]Task, bool, error) {
	if status != "" && !status.Valid() {
		return nil, false, Errorf(ErrInvalidRequest, "unknown status %q", status)
	}
	now, err := s.readNow(ctx)
	if err != nil {
		return nil, false, err
	}
	f := TaskFilter{Status: status, Now: now, AfterSeq: afterSeq, Limit: limit}
	if f.User, f.Agent, err = listOwner(p, "tasks"); err != nil {
		return nil, false, err
	}
	ts, err := s.store.ListTasks(ctx, f)
	if err != nil {
		return nil, false, err
	}
	ts, more := page(ts, limit)
	return ts, more, nil
}

// listOwner is whose list p asks for: a user's (as on_behalf_of) or an
// agent's; other kinds list nothing.
func listOwner(p Principal, what string) (user, agent *Ref, err error) {
	ref := p.Ref()
	switch p.Kind {
	case KindUser:
		return &ref, nil, nil
	case KindAgent:
		return nil, &ref, nil
	}
	return nil, nil, Errorf(ErrWrongPrincipalKind, "only agents and users list %s", what)
}

// page cuts a store's answer of at most limit+1 rows to limit, and says
// whether more remain.
func page[T any](rows []T, limit int) ([]T, bool) {
	if len(rows) > limit {
		return rows[:limit], true
	}
	return rows, false
}

// ApproveRequest narrows a task at approval. Nil Scopes or Audiences mean
// "as requested"; TTLSeconds 0 means "as requested".
type ApproveRequest struct {
	Scopes     []string
	Audiences  []string
	TTLSeconds int64
	// Version and Digest, when set, bind the approval to the task as the
	// approver saw it.
	Version int
	Digest  string
}

// Approve approves a pending task. Only the task's user may, and only with
// scopes inside both the request and the user's grants (invariants 1–3, 5).
func (s *Service) Approve(ctx context.Context, p Principal, id string, req ApproveRequest) (Task, error) {
	if p.Kind != KindUser {
		return Task{}, Errorf(ErrApprovalForbidden, "only the task's user may approve it; caller is of kind %s", p.Kind)
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, err
	}
	var out Task
	err := s.store.InTx(ctx, func(tx Tx) error {
		t, err := tx.LockTask(ctx, id)
		if err != nil {
			return err
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if err := s.decidable(p, t, now, req.Version, req.Digest); err != nil {
			return err
		}
		// Checked under the task's lock: a suspension that commits after
		// this read waits for the lock, then revokes what this approves.
		if err := s.notSuspended(ctx, tx, t.Agent); err != nil {
			return err
		}
		approved := t.Scopes
		if req.Scopes != nil {
			if approved, err = ParseScopes(req.Scopes); err != nil {
				return err
			}
			approved = s.catalog.Canonical(approved, t.Audiences...)
		}
		if err := s.catalog.CheckGrantable(approved); err != nil {
			return err
		}
		if miss := t.Scopes.Uncovered(approved); len(miss) > 0 {
			return Errorf(ErrScopeExceedsRequest, "not requested: %s", strings.Join(miss.Strings(), " "))
		}
		auds := t.Audiences
		if req.Audiences != nil {
			if auds, err = s.audiences(req.Audiences); err != nil {
				return err
			}
			for _, a := range auds {
				if !contains(t.Audiences, a) {
					return Errorf(ErrScopeExceedsRequest, "audience %q was not requested", a)
				}
			}
		}
		if miss := s.catalog.GrantsFor(p).Uncovered(approved); len(miss) > 0 {
			return Errorf(ErrScopeExceedsGrant, "beyond the approver's grants: %s", strings.Join(miss.Strings(), " "))
		}
		for _, sc := range approved {
			for _, a := range auds {
				if !s.catalog.Granted(p, sc, a) {
					return Errorf(ErrScopeExceedsGrant, "no grant of the approver covers %s for audience %q", sc, a)
				}
			}
		}
		if req.TTLSeconds < 0 {
			return Errorf(ErrInvalidRequest, "ttl_seconds must be positive")
		}
		d := s.decideAll(PolicyRequest{Operation: OpApprove, TaskID: t.ID, Agent: t.Agent, User: t.User,
			Groups: p.Groups, Tool: t.Tool, Dataset: t.Dataset, Time: now, DPoP: t.RequireDPoP}, approved, auds)
		if d.Effect == EffectDeny {
			return policyDenied(d)
		}
		if req.TTLSeconds > 0 {
			if exp := now.Add(time.Duration(min(req.TTLSeconds, int64(s.taskMax/time.Second))) * time.Second); exp.Before(t.ExpiresAt) {
				t.ExpiresAt = exp
			}
		}
		t.Status, t.ApprovedScopes, t.ApprovedAudiences, t.ApprovedAt = StatusApproved, approved, auds, now
		t.UserGroups = append([]string{}, p.Groups...)
		t.Version++
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		out = t
		if err := s.notify(ctx, tx, s.taskNotice(EventTaskApproved, t, now, ActorOf(p))); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventTaskApproved, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{
				"approved_scopes": approved.Strings(), "approved_audiences": auds,
				"expires_at": t.ExpiresAt, "version": t.Version,
			}),
		})
	})
	return out, err
}

// decidable checks that p may approve or deny t now, as the version or
// digest the decider saw, if named.
func (s *Service) decidable(p Principal, t Task, now time.Time, version int, digest string) error {
	if !p.Is(KindUser, t.User) {
		return Errorf(ErrApprovalForbidden, "only the task's user may approve or deny it")
	}
	switch st := t.EffectiveStatus(now); st {
	case StatusPending:
		if version != 0 && version != t.Version {
			return Errorf(ErrTaskChanged, "the task is at version %d, not %d", t.Version, version)
		}
		if digest != "" && digest != t.Digest() {
			return Errorf(ErrTaskChanged, "the task's digest is no longer %s", digest)
		}
		return nil
	case StatusApproved:
		return Errorf(ErrTaskImmutable, "the task is already approved; a wider need is a new task")
	default:
		return Errorf(ErrTaskNotActive, "the task is %s", st)
	}
}

// DenyRequest is a denial, optionally bound like an approval.
type DenyRequest struct {
	Reason  string
	Version int
	Digest  string
}

// Deny denies a pending task. Only the task's user may.
func (s *Service) Deny(ctx context.Context, p Principal, id string, req DenyRequest) (Task, error) {
	reason := req.Reason
	if p.Kind != KindUser {
		return Task{}, Errorf(ErrApprovalForbidden, "only the task's user may deny it; caller is of kind %s", p.Kind)
	}
	if err := checkText("reason", reason, maxReasonBytes, false); err != nil {
		return Task{}, err
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, err
	}
	var out Task
	err := s.store.InTx(ctx, func(tx Tx) error {
		t, err := tx.LockTask(ctx, id)
		if err != nil {
			return err
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if err := s.decidable(p, t, now, req.Version, req.Digest); err != nil {
			return err
		}
		t.Status, t.DenyReason, t.ClosedAt = StatusDenied, reason, now
		t.Version++
		if err := tx.UpdateTask(ctx, t); err != nil {
			return err
		}
		out = t
		n := s.taskNotice(EventTaskDenied, t, now, ActorOf(p))
		n.Reason = reason
		if err := s.notify(ctx, tx, n); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventTaskDenied, Actor: ActorOf(p), TaskID: t.ID,
			Detail: detail(map[string]any{"reason": reason, "version": t.Version}),
		})
	})
	return out, err
}

// Close closes an approved task for its agent or its user and revokes every
// credential of it in the same transaction (invariant 8).
func (s *Service) Close(ctx context.Context, p Principal, id string) (Task, int, error) {
	if p.Kind != KindAgent && p.Kind != KindUser {
		return Task{}, 0, Errorf(ErrWrongPrincipalKind, "only the task's agent or user may close it")
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Task{}, 0, err
	}
	var (
		out     Task
		revoked int
		revs    []Revocation
	)
	err := s.store.InTx(ctx, func(tx Tx) error {
		t, err := tx.LockTask(ctx, id)
		if err != nil {
			return err
		}
		if !p.Is(KindAgent, t.Agent) && !p.Is(KindUser, t.User) {
			return Errorf(ErrNotTaskParty, "caller is neither the task's agent nor its user")
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if st := t.EffectiveStatus(now); st != StatusApproved {
			return Errorf(ErrTaskNotActive, "the task is %s", st)
		}
		n, r, err := s.endTask(ctx, tx, &t, StatusClosed, now, ActorOf(p), "task_closed")
		if err != nil {
			return err
		}
		out, revoked, revs = t, n, r
		return nil
	})
	if err != nil {
		return Task{}, 0, err
	}
	return out, revoked, s.revoked(ctx, revs)
}

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
func (s *Service) Introspect(ctx context.Context, p Principal, raw string) (Introspection, error) {
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

// AuditEvents returns audit events to an auditor.
func (s *Service) AuditEvents(ctx context.Context, p Principal, f HistoryFilter) ([]AuditEvent, bool, error) {
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
func (s *Service) Credentials(ctx context.Context, p Principal, f HistoryFilter) ([]Credential, bool, error) {
	if err := s.auditor(p, f); err != nil {
		return nil, false, err
	}
	if f.Type != "" && f.Type != "jwt" && f.Type != KindIDJAG && f.Type != KindVaultToken && f.Type != KindVaultLease {
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

// RecordRefusal writes the request.refused event for a refusal. It is
// called once for every refused request of a caller with a verified
// identity, whatever refused it; the refusals of callers with none are
// counted and chained as summaries (RecordRefusalSummaries). The detail
// is capped (RefusalDetail).
func (s *Service) RecordRefusal(ctx context.Context, p Principal, taskID, op string, refusal error) error {
	code := CodeOf(refusal)
	if code == "" {
		code = "internal"
	}
	var e *Error
	errors.As(refusal, &e)
	d := map[string]any{"code": code, "detail": RefusalDetail(refusal), "op": op}
	if e != nil {
		for k, v := range e.Extra {
			if k == "task" {
				if id, ok := v.(string); ok && taskID == "" {
					taskID = id
				}
				continue
			}
			d[k] = v
		}
	}
	return s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventRequestRefused, Actor: ActorOf(p), TaskID: taskID,
			Detail: detail(d),
		})
	})
}

// Ready reports whether the store is reachable.
func (s *Service) Ready(ctx context.Context) error { return s.store.Ping(ctx) }

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// StatusOf is t's effective status now.
func (s *Service) StatusOf(t Task) Status { return t.EffectiveStatus(s.now()) }

// maxHistory bounds one task's timeline; a longer one says it is truncated
// and the auditor pages through /v1/audit/events instead.
const maxHistory = 10000

// History is one task's timeline for an auditor.
type History struct {
	Task        Task
	Events      []AuditEvent
	Credentials []Credential
	Truncated   bool
}

// TaskHistory returns a task's whole story: the request, the decision, each
// credential, every refusal and revocation, in commit order.
func (s *Service) TaskHistory(ctx context.Context, p Principal, id string) (History, error) {
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
