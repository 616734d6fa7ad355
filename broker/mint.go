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

// MintRequest asks for an access token within a task.
type MintRequest struct {
	Scopes     []string
	Audience   string
	TTLSeconds int64
	Tool       string
	Dataset    string
	// IdempotencyKey, when set, makes a retry with the same body return
	// the credential minted the first time.
	IdempotencyKey string
	// JKT, when set, is the thumbprint of the key of the request's valid
	// DPoP proof (checked by the caller, package dpop): the token is bound
	// to it (RFC 9449 §6). "" asks for a bearer token.
	JKT string
}

// Minted is an issued access token and its durable record.
type Minted struct {
	Token      string
	ExpiresIn  int64
	Credential Credential
	// Replayed is set when an Idempotency-Key retry returned an existing
	// credential.
	Replayed bool
	// Scope is an ID-JAG's scope as the grant writes it (the target's
	// names); "" for an access token.
	Scope string
}

// requestHash binds an Idempotency-Key to the canonical mint request.
func requestHash(scopes Scopes, req MintRequest) string {
	b, _ := json.Marshal([]any{scopes.Strings(), req.Audience, req.TTLSeconds, req.Tool, req.Dataset})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func validIdempotencyKey(k string) bool {
	if len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Mint issues an access token for an approved task to the task's agent.
// The credential row and its audit event commit before the token is
// returned (invariant 7), and no token is ever issued after the task's
// close commits. Every rule is decideMint's; it runs on one of two
// branches:
//
//   - on a snapshot: this replica's copy of the task as last locked, at
//     the database's clock as last read and carried forward. The store
//     records the credential only if the task is still at the snapshot's
//     version and lives (InsertCredentialIfVersion); every change of a
//     task's state bumps its version, so an unchanged version means every
//     rule decided on the snapshot still holds.
//   - under the task's lock: when there is no snapshot or it was stale,
//     or the decision needs the transaction (a budget, a step-up policy,
//     an Idempotency-Key), or it refuses (the refusal is answered and
//     audited here).
func (s *Service) Mint(ctx context.Context, p Principal, id string, req MintRequest) (_ Minted, err error) {
	defer func() { err = s.refused(ctx, p, id, OpMint, err) }()
	return s.mint(ctx, p, id, req)
}

// mint is Mint without recording its refusal: Exchange and
// PollBackchannel mint through it and record their own.
func (s *Service) mint(ctx context.Context, p Principal, id string, req MintRequest) (Minted, error) {
	if p.Kind != KindAgent {
		return Minted{}, Errorf(ErrWrongPrincipalKind, "only agents mint tokens")
	}
	if err := notFoundUnlessValid(id); err != nil {
		return Minted{}, err
	}
	scopes, err := ParseScopes(req.Scopes)
	if err != nil {
		return Minted{}, err
	}
	scopes = s.catalog.Canonical(scopes, req.Audience)
	if req.TTLSeconds < 0 {
		return Minted{}, Errorf(ErrInvalidRequest, "ttl_seconds must be positive")
	}
	if req.Audience == "" {
		return Minted{}, Errorf(ErrInvalidRequest, "audience is required")
	}
	if err := checkText("tool", req.Tool, maxLabelBytes, false); err != nil {
		return Minted{}, err
	}
	if err := checkText("dataset", req.Dataset, maxLabelBytes, false); err != nil {
		return Minted{}, err
	}
	if !validIdempotencyKey(req.IdempotencyKey) {
		return Minted{}, Errorf(ErrInvalidRequest, "Idempotency-Key must be 1 to 255 visible ASCII characters")
	}
	jti, err := s.newID("")
	if err != nil {
		return Minted{}, err
	}
	if out, done, err := s.mintOnSnapshot(ctx, p, id, jti, scopes, req); done || err != nil {
		return out, err
	}
	return s.mintLocked(ctx, p, id, jti, scopes, req)
}

// mintPlan is decideMint's answer: the credential to record, or the
// credential recorded before for the same Idempotency-Key.
type mintPlan struct {
	cred          Credential // JTI to JKT, IssuedAt and ExpiresAt set
	tool, dataset string     // the labels the request is decided with
	policy        PolicyDecision
	// locked is set when the decision needs the task's lock: a budget to
	// count, a policy that does not simply allow (a step-up, a denial to
	// audit), an Idempotency-Key to look up.
	locked bool
	replay *Minted // an Idempotency-Key retry: this, and nothing recorded
}

// decideMint decides, on task t as of now, a mint of scopes by p: every
// rule of Mint, and nothing else. It reads nothing and writes nothing:
// both branches of Mint call it, and what it cannot decide alone it
// leaves to the locked one (plan.locked). prev is the credential recorded
// for req's Idempotency-Key, if any (the locked branch looks it up).
func (s *Service) decideMint(p Principal, t Task, now time.Time, jti string, scopes Scopes, req MintRequest, prev *Credential) (mintPlan, error) {
	if !p.Is(KindAgent, t.Agent) {
		return mintPlan{}, Errorf(ErrNotTaskParty, "the task belongs to another agent")
	}
	if err := s.mintable(t, now, scopes, req.Audience); err != nil {
		return mintPlan{}, err
	}
	if t.RequireDPoP && req.JKT == "" {
		return mintPlan{}, Errorf(ErrDPoPRequired, "the task requires DPoP-bound tokens: send a DPoP proof")
	}
	reqHash := requestHash(scopes, req)
	if prev != nil {
		m, err := s.replay(*prev, reqHash, req.JKT, now)
		if err != nil {
			return mintPlan{}, err
		}
		return mintPlan{replay: &m}, nil
	}
	tool, dataset, err := boundLabels(t, req.Tool, req.Dataset)
	if err != nil {
		return mintPlan{}, err
	}
	iat := now.Truncate(time.Second)
	ttl := s.tokMax
	if req.TTLSeconds > 0 && req.TTLSeconds < int64(ttl/time.Second) {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	ttl = min(ttl, t.ExpiresAt.Sub(iat)).Truncate(time.Second)
	if ttl < time.Second {
		return mintPlan{}, Errorf(ErrTaskNotActive, "the task expires in less than a second")
	}
	plan := mintPlan{
		cred: Credential{
			ID: jti, TaskID: t.ID, Kind: KindJWT, Agent: t.Agent, User: t.User,
			Scopes: scopes, Audience: req.Audience, IssuedAt: iat, ExpiresAt: iat.Add(ttl),
			IdempotencyKey: req.IdempotencyKey, JKT: req.JKT,
		},
		tool: tool, dataset: dataset,
		policy: s.decideAll(PolicyRequest{
			Operation: OpMint, TaskID: t.ID, Agent: t.Agent, User: t.User, Groups: t.UserGroups,
			Tool: tool, Dataset: dataset, Time: now, DPoP: req.JKT != "",
		}, scopes, []string{req.Audience}),
	}
	if req.IdempotencyKey != "" {
		plan.cred.RequestHash = reqHash
	}
	plan.locked = req.IdempotencyKey != "" || t.Budget != (Budget{}) || plan.policy.Effect != EffectAllow
	return plan, nil
}

// mintOnSnapshot is Mint's optimistic branch (see Mint): done is false,
// and nothing recorded, when the locked branch must answer.
func (s *Service) mintOnSnapshot(ctx context.Context, p Principal, id, jti string, scopes Scopes, req MintRequest) (out Minted, done bool, err error) {
	if req.IdempotencyKey != "" {
		return Minted{}, false, nil
	}
	t, ok := s.snaps.get(id)
	if !ok {
		return Minted{}, false, nil
	}
	now, ok := s.dbClock.now(s.clock())
	if !ok {
		return Minted{}, false, nil
	}
	plan, err := s.decideMint(p, t, now, jti, scopes, req, nil)
	if err != nil || plan.locked {
		return Minted{}, false, nil
	}
	c := plan.cred
	if ok, err := s.store.InsertCredentialIfVersion(ctx, &c, t.Version, issuedEvent(p, c, now, plan.tool, plan.dataset)); err != nil || !ok {
		return Minted{}, false, err
	}
	s.quickMints.Add(1)
	if out.Token, err = s.tokens.Sign(ctx, s.names.AccessToken(t, c)); err != nil {
		return Minted{}, true, err
	}
	out.ExpiresIn, out.Credential = int64(c.ExpiresAt.Sub(c.IssuedAt)/time.Second), c
	return out, true, nil
}

// mintLocked is Mint's branch under the task's row lock (see Mint).
func (s *Service) mintLocked(ctx context.Context, p Principal, id, jti string, scopes Scopes, req MintRequest) (Minted, error) {
	var (
		out     Minted
		claims  AccessToken
		refusal error
	)
	err := s.store.InTx(ctx, func(tx Tx) error {
		t, now, err := s.lockForIssue(ctx, tx, p, id)
		if err != nil {
			return err
		}
		s.snaps.put(t)
		s.dbClock.observe(now, s.clock())
		var prev *Credential
		if req.IdempotencyKey != "" {
			c, err := tx.CredentialByIdempotencyKey(ctx, t.ID, req.IdempotencyKey)
			switch {
			case err == nil:
				prev = &c
			case !errors.Is(err, ErrNotFound):
				return err
			}
		}
		plan, err := s.decideMint(p, t, now, jti, scopes, req, prev)
		if err != nil {
			return err
		}
		if plan.replay != nil {
			out, claims = *plan.replay, s.names.AccessToken(t, plan.replay.Credential)
			return nil
		}
		if plan.locked {
			pd := plan.policy
			stepUp, refused, err := s.gate(ctx, tx, p, t, now, gateRequest{Op: OpMint, Scopes: scopes,
				Audience: req.Audience, Tool: plan.tool, Dataset: plan.dataset, Consume: true, DPoP: req.JKT != "",
				Decided: &pd})
			if err != nil || refused != nil {
				refusal = refused
				return err
			}
			plan.cred.StepUpID = stepUp
		}
		c := plan.cred
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		out = Minted{ExpiresIn: int64(c.ExpiresAt.Sub(c.IssuedAt) / time.Second), Credential: c}
		claims = s.names.AccessToken(t, c)
		return tx.AppendAudit(ctx, issuedEvent(p, c, now, plan.tool, plan.dataset))
	})
	if err != nil {
		return Minted{}, err
	}
	if refusal != nil {
		return Minted{}, refusal
	}
	// Signed once the record is committed, outside the transaction: the
	// signature needs nothing of the database.
	if out.Token, err = s.tokens.Sign(ctx, claims); err != nil {
		return Minted{}, err
	}
	return out, nil
}

// mintable refuses a mint of scopes for audience that task t, as of now,
// does not allow: the task must be approved and live, and the request
// within the catalog's grantable scopes and the task's approval.
func (s *Service) mintable(t Task, now time.Time, scopes Scopes, audience string) error {
	if st := t.EffectiveStatus(now); st != StatusApproved {
		return Errorf(ErrTaskNotActive, "the task is %s", st)
	}
	if err := s.catalog.CheckGrantable(scopes); err != nil {
		return err
	}
	if _, ok := s.catalog.Audience(audience); !ok {
		return Errorf(ErrInvalidRequest, "unknown audience %q", audience)
	}
	if !contains(t.ApprovedAudiences, audience) {
		return Errorf(ErrScopeExceedsApproval, "audience %q is not approved for this task", audience)
	}
	if miss := t.ApprovedScopes.Uncovered(scopes); len(miss) > 0 {
		return Errorf(ErrScopeExceedsApproval, "not approved: %s", strings.Join(miss.Strings(), " "))
	}
	return nil
}

// issuedDetail is the detail of a credential.issued event: a struct, as
// it is written on every mint (a map is sorted and boxed each time), with
// its fields in the order a map's keys are written, so the bytes are the
// same.
type issuedDetail struct {
	Audience  string         `json:"audience"`
	Dataset   string         `json:"dataset"`
	ExpiresAt time.Time      `json:"expires_at"`
	JKT       string         `json:"jkt,omitempty"`
	JTISHA256 string         `json:"jti_sha256"`
	Kind      CredentialKind `json:"kind"`
	Resource  string         `json:"resource,omitempty"` // an ID-JAG's
	Scopes    []string       `json:"scopes"`
	StepUpID  string         `json:"step_up_id"`
	Tool      string         `json:"tool"`
}

// issuedEvent is the audit event of credential c, minted by p at now.
func issuedEvent(p Principal, c Credential, now time.Time, tool, dataset string) AuditEvent {
	return issuedEventFor(p, c, now, tool, dataset, "")
}

// issuedEventFor is issuedEvent naming, for an ID-JAG, its resource.
func issuedEventFor(p Principal, c Credential, now time.Time, tool, dataset, resource string) AuditEvent {
	d, err := json.Marshal(issuedDetail{
		Audience: c.Audience, Dataset: dataset, ExpiresAt: c.ExpiresAt, JKT: c.JKT, JTISHA256: HashID(c.ID),
		Kind: c.Kind, Resource: resource, Scopes: c.Scopes.Strings(), StepUpID: c.StepUpID, Tool: tool,
	})
	if err != nil {
		panic("broker: audit detail not encodable: " + err.Error())
	}
	return AuditEvent{Time: now, Type: EventCredentialIssued, Actor: ActorOf(p), TaskID: c.TaskID, Detail: d}
}

// boundLabels are the tool and dataset a request of task t is decided
// with: those the task was asked and approved for, which a request may
// repeat but never change; a task that named none leaves them to each
// request. The agent declares them, so policies on them guard against
// mistakes; an enforcement point reports what is really used (AuthZEN).
func boundLabels(t Task, tool, dataset string) (string, string, error) {
	if tool == "" {
		tool = t.Tool
	} else if t.Tool != "" && tool != t.Tool {
		return "", "", Errorf(ErrScopeExceedsApproval, "the task was approved for tool %q, not %q", t.Tool, tool)
	}
	if dataset == "" {
		dataset = t.Dataset
	} else if t.Dataset != "" && dataset != t.Dataset {
		return "", "", Errorf(ErrScopeExceedsApproval, "the task was approved for dataset %q, not %q", t.Dataset, dataset)
	}
	return tool, dataset, nil
}

// replay answers an Idempotency-Key retry with the credential recorded the
// first time: never a second live credential for one key. A bound
// credential is only returned to a proof of its own key (jkt), and a
// bearer one only without a proof: a token is never handed to another
// key, nor unbound.
func (s *Service) replay(prev Credential, reqHash, jkt string, now time.Time) (Minted, error) {
	if prev.RequestHash != reqHash {
		return Minted{}, Errorf(ErrIdempotencyConflict, "this Idempotency-Key was used with another request")
	}
	if prev.JKT != jkt {
		return Minted{}, Errorf(ErrIdempotencyConflict, "this Idempotency-Key was used with another DPoP key (or without one)")
	}
	left := prev.ExpiresAt.Sub(now) / time.Second
	if !prev.RevokedAt.IsZero() || left < 1 {
		return Minted{}, Errorf(ErrIdempotencyConflict, "the credential minted for this Idempotency-Key is no longer active; use a new key")
	}
	return Minted{ExpiresIn: int64(left), Credential: prev, Replayed: true}, nil
}
