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

// KindIDJAG is the credential kind of an Identity Assertion JWT
// Authorization Grant (draft-ietf-oauth-identity-assertion-authz-grant):
// a JWT in which Errand vouches, for one approved task, for the user, the
// agent's client at a third-party authorization server and one resource of
// it. The agent redeems it there (RFC 7523 JWT bearer grant) for that
// server's access token; Errand never accepts it as anyone's identity.
const KindIDJAG CredentialKind = "id-jag"

// DefaultIDJAGLifetime is an ID-JAG's longest life unless its target asks
// for less: a grant is redeemed at once.
const DefaultIDJAGLifetime = 5 * time.Minute

// IDJAGTarget is an authorization server that accepts Errand's ID-JAGs.
type IDJAGTarget struct {
	// Issuer is the authorization server's issuer identifier: the aud of
	// its ID-JAGs, and the audience a token exchange names it by.
	Issuer string
	// Resources are the resources (RFC 8707) of the target an ID-JAG may
	// name; each is a configured audience, so that a task's approval names
	// it as it names any audience (and a grant's audiences bound it).
	Resources []string
	// ClientID is the agents' client id at the target (client_id claim).
	ClientID string
	// ScopesMap, when set, writes Errand scopes in the target's scope
	// names: a key is an Errand scope, or an action standing for every
	// scope of it; a scope it does not map is refused. Nil: the scopes
	// are written as Errand writes them.
	ScopesMap map[string]string
	// MaxLifetime bounds an ID-JAG's life (at most, and by default,
	// DefaultIDJAGLifetime).
	MaxLifetime time.Duration
	// EventsEndpoint, when set, is the target's Security Event Token push
	// endpoint (RFC 8935): a revoked ID-JAG of it (its task ended, or its
	// holder revoked it) is queued in the outbox and announced there, so
	// that the target drops the grant and what it issued from it.
	EventsEndpoint string
}

// SecurityEvent is a Security Event Token (RFC 8417) as a token issuer
// signs it; the issuer adds iss.
type SecurityEvent struct {
	Audience string
	JTI      string
	IssuedAt time.Time
	Txn      string
	SubID    map[string]any // RFC 9493 subject identifier
	Events   map[string]any
}

// IDJAG is what a token issuer signs as an ID-JAG: the draft's claims,
// decided by the broker, with the agent as act and the task. The issuer
// adds iss.
type IDJAG struct {
	Subject   string // the user
	Act       Ref    // the agent
	Audience  string // the target's issuer
	ClientID  string // the agent's client id at the target
	Resource  string
	Scope     string // space-separated, in the target's names
	TaskID    string
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// IDJAGSigner is the ability of a TokenIssuer to sign ID-JAGs (typ
// oauth-id-jag+jwt) with the keys its JWKS publishes, and to recognise
// one it signed (for RFC 7009 revocation by its holder).
type IDJAGSigner interface {
	SignIDJAG(ctx context.Context, g IDJAG) (string, error)
	// IDJAGOf returns the jti of raw, an ID-JAG this issuer signed with a
	// key it still holds, expired or not; anything else is ErrInvalidToken.
	IDJAGOf(ctx context.Context, raw string) (string, error)
}

// IssuesIDJAGs reports whether an ID-JAG target is configured, so that
// the metadata advertises the token type only where an exchange can work.
func (s *Service) IssuesIDJAGs() bool { return len(s.idjag) > 0 }

// queuesBackend reports whether revoking c leaves work for a backend:
// a Vault credential always; an ID-JAG when its target takes pushed
// revocation events.
func (s *Service) queuesBackend(c Credential) bool {
	if c.Kind == KindIDJAG {
		return s.idjag[c.Audience].EventsEndpoint != ""
	}
	return s.backend[c.Kind]
}

// IDJAGRequest is a token exchange for an ID-JAG: the task, the target's
// issuer (audience), the target's resource and the Errand scopes asked for
// (nil: every approved scope).
type IDJAGRequest struct {
	TaskID         string
	Audience       string
	Resource       string
	Scopes         []string
	IdempotencyKey string
}

// validIDJAGTargets checks targets as NewService receives them (package
// config has checked their URLs), their resources written as the catalog
// writes its audiences.
func validIDJAGTargets(targets []IDJAGTarget, tokens TokenIssuer, cat *Catalog) (map[string]IDJAGTarget, error) {
	out := map[string]IDJAGTarget{}
	if len(targets) == 0 {
		return out, nil
	}
	if _, ok := tokens.(IDJAGSigner); !ok {
		return nil, errors.New("broker: ID-JAG targets are configured, but the token issuer cannot sign ID-JAGs")
	}
	for _, t := range targets {
		switch {
		case t.Issuer == "" || t.ClientID == "" || len(t.Resources) == 0:
			return nil, errors.New("broker: an ID-JAG target needs an issuer, a client id and resources")
		case t.MaxLifetime < 0 || t.MaxLifetime > DefaultIDJAGLifetime:
			return nil, errors.New("broker: an ID-JAG target's max lifetime is at most 5m")
		}
		if _, dup := out[t.Issuer]; dup {
			return nil, errors.New("broker: two ID-JAG targets have issuer " + t.Issuer)
		}
		if t.MaxLifetime == 0 {
			t.MaxLifetime = DefaultIDJAGLifetime
		}
		resources := make([]string, len(t.Resources))
		for i, r := range t.Resources {
			aud, err := cat.ResolveResource(r)
			if err != nil {
				return nil, errors.New("broker: ID-JAG target " + t.Issuer + ": resource " + r + " is not a configured audience")
			}
			resources[i] = aud
		}
		t.Resources = resources
		out[t.Issuer] = t
	}
	return out, nil
}

// targetScope writes scopes in target's names, each once: never a name
// that no scope of the request maps to.
func targetScope(target IDJAGTarget, scopes Scopes) (string, error) {
	var out []string
	seen := map[string]bool{}
	for _, sc := range scopes {
		name := sc.String()
		if target.ScopesMap != nil {
			n, ok := target.ScopesMap[name]
			if !ok {
				n, ok = target.ScopesMap[sc.Action]
			}
			if !ok {
				return "", Errorf(ErrInvalidScope, "scope %s has no name at %s", name, target.Issuer)
			}
			name = n
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return strings.Join(out, " "), nil
}

// idjagHash binds an Idempotency-Key to one ID-JAG request; its first
// member keeps it apart from an access token's request.
func idjagHash(scopes Scopes, audience, resource string) string {
	b, _ := json.Marshal([]any{KindIDJAG, scopes.Strings(), audience, resource})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// IDJAG issues an ID-JAG for an approved task to the task's agent, as
// Mint issues an access token: under the task's lock, within its approval
// (its scopes, and its resource among the approved audiences, as a token's
// audience must be), through the budget, the policies (operation "id-jag")
// and step-up, the credential and its credential.issued event committed
// before the grant is signed and returned. An unknown target, a resource
// not of it or not approved, is ErrInvalidTarget. Minted.Scope is the
// scope as the grant writes it.
func (s *Service) IDJAG(ctx context.Context, p Principal, req IDJAGRequest) (_ Minted, err error) {
	defer func() { err = s.refused(ctx, p, req.TaskID, OpIDJAG, err) }()
	if p.Kind != KindAgent {
		return Minted{}, Errorf(ErrWrongPrincipalKind, "only agents exchange tokens")
	}
	if err := notFoundUnlessValid(req.TaskID); err != nil {
		return Minted{}, err
	}
	target, ok := s.idjag[req.Audience]
	if !ok {
		return Minted{}, Errorf(ErrInvalidTarget, "no ID-JAG target has the issuer named by audience")
	}
	resource := req.Resource
	if resource == "" && len(target.Resources) == 1 {
		resource = target.Resources[0]
	} else if aud, err := s.catalog.ResolveResource(resource); err == nil {
		resource = aud
	}
	if !contains(target.Resources, resource) {
		return Minted{}, Errorf(ErrInvalidTarget, "resource must be one of the target's resources")
	}
	var scopes Scopes
	if req.Scopes != nil {
		var err error
		if scopes, err = ParseScopes(req.Scopes); err != nil {
			return Minted{}, err
		}
	}
	if !validIdempotencyKey(req.IdempotencyKey) {
		return Minted{}, Errorf(ErrInvalidRequest, "Idempotency-Key must be 1 to 255 visible ASCII characters")
	}
	jti, err := s.newID("")
	if err != nil {
		return Minted{}, err
	}
	var (
		out     Minted
		grant   IDJAG
		refusal error
	)
	err = s.store.InTx(ctx, func(tx Tx) error {
		t, now, err := s.lockForIssue(ctx, tx, p, req.TaskID)
		if err != nil {
			return err
		}
		s.snaps.put(t)
		s.dbClock.observe(now, s.clock())
		if st := t.EffectiveStatus(now); st != StatusApproved {
			return Errorf(ErrTaskNotActive, "the task is %s", st)
		}
		// The user approved where the task's credentials may go; an
		// ID-JAG's resource is one of those places, never a new one.
		if !contains(t.ApprovedAudiences, resource) {
			return Errorf(ErrInvalidTarget, "the task's approval does not name this resource")
		}
		want := scopes
		if want == nil {
			want = t.ApprovedScopes
		}
		if err := s.catalog.CheckGrantable(want); err != nil {
			return err
		}
		if miss := t.ApprovedScopes.Uncovered(want); len(miss) > 0 {
			return Errorf(ErrScopeExceedsApproval, "not approved: %s", strings.Join(miss.Strings(), " "))
		}
		scope, err := targetScope(target, want)
		if err != nil {
			return err
		}
		if t.RequireDPoP {
			return Errorf(ErrDPoPRequired, "the task requires DPoP-bound tokens, and an ID-JAG is bound to no key")
		}
		hash := idjagHash(want, target.Issuer, resource)
		if req.IdempotencyKey != "" {
			prev, err := tx.CredentialByIdempotencyKey(ctx, t.ID, req.IdempotencyKey)
			switch {
			case err == nil:
				left := prev.ExpiresAt.Sub(now) / time.Second
				switch {
				case prev.Kind != KindIDJAG || prev.RequestHash != hash:
					return Errorf(ErrIdempotencyConflict, "this Idempotency-Key was used with another request")
				case !prev.RevokedAt.IsZero() || left < 1:
					return Errorf(ErrIdempotencyConflict, "the credential minted for this Idempotency-Key is no longer active; use a new key")
				}
				out = Minted{ExpiresIn: int64(left), Credential: prev, Replayed: true, Scope: scope}
				grant = s.idjagOf(t, prev, target, resource, scope)
				return nil
			case !errors.Is(err, ErrNotFound):
				return err
			}
		}
		tool, dataset, err := boundLabels(t, "", "")
		if err != nil {
			return err
		}
		stepUp, refused, err := s.gate(ctx, tx, p, t, now, gateRequest{Op: OpIDJAG, Scopes: want,
			Audience: resource, Tool: tool, Dataset: dataset, Consume: true})
		if err != nil || refused != nil {
			refusal = refused
			return err
		}
		iat := now.Truncate(time.Second)
		ttl := min(target.MaxLifetime, t.ExpiresAt.Sub(iat)).Truncate(time.Second)
		if ttl < time.Second {
			return Errorf(ErrTaskNotActive, "the task expires in less than a second")
		}
		c := Credential{
			ID: jti, TaskID: t.ID, Kind: KindIDJAG, Agent: t.Agent, User: t.User,
			Scopes: want, Audience: target.Issuer, IssuedAt: iat, ExpiresAt: iat.Add(ttl),
			IdempotencyKey: req.IdempotencyKey, StepUpID: stepUp,
		}
		if req.IdempotencyKey != "" {
			c.RequestHash = hash
		}
		if err := tx.InsertCredential(ctx, &c); err != nil {
			return err
		}
		out = Minted{ExpiresIn: int64(ttl / time.Second), Credential: c, Scope: scope}
		grant = s.idjagOf(t, c, target, resource, scope)
		return tx.AppendAudit(ctx, issuedEventFor(p, c, now, tool, dataset, resource))
	})
	if err != nil {
		return Minted{}, err
	}
	if refusal != nil {
		return Minted{}, refusal
	}
	// Signed once the record is committed, as Mint signs.
	if out.Token, err = s.tokens.(IDJAGSigner).SignIDJAG(ctx, grant); err != nil {
		return Minted{}, err
	}
	return out, nil
}

// idjagOf is the grant of credential c of task t, its principals written
// as an access token's are.
func (s *Service) idjagOf(t Task, c Credential, target IDJAGTarget, resource, scope string) IDJAG {
	return IDJAG{
		Subject: s.names.User(t.User), Act: Ref{Issuer: t.Agent.Issuer, Subject: s.names.Agent(t.Agent)},
		Audience: target.Issuer, ClientID: target.ClientID, Resource: resource, Scope: scope,
		TaskID: t.ID, JTI: c.ID, IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt,
	}
}
