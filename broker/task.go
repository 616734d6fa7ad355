package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Status is a task's state. pending → approved | denied; approved →
// closed | expired | revoked (the kill switch). Terminal states never
// change again; every change bumps the task's Version.
type Status string

const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusDenied   Status = "denied"
	StatusClosed   Status = "closed"
	StatusExpired  Status = "expired"
	// StatusRevoked: the task's agent was suspended (the kill switch).
	StatusRevoked Status = "revoked"
	// StatusRevoking is shown, never stored: the task is closed, expired
	// or revoked, but a backend has not yet confirmed every revocation.
	StatusRevoking Status = "revoking"
)

// Valid reports whether s is one of the states above (revoking included,
// as a filter: it is shown, never stored).
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusApproved, StatusDenied, StatusClosed, StatusExpired, StatusRevoked, StatusRevoking:
		return true
	}
	return false
}

// Task is a goal one agent pursues for one user.
type Task struct {
	ID      string
	Seq     int64 // store-assigned, for keyset pagination
	Version int   // incremented on every state change
	Status  Status

	Agent Ref // the requesting agent
	User  Ref // on_behalf_of

	Goal              string
	Scopes            Scopes // requested
	ApprovedScopes    Scopes
	Audiences         []string // requested
	ApprovedAudiences []string
	Risk              Risk
	Tool, Dataset     string
	TTLCapped         bool
	// Budget bounds what the task may mint (0: unlimited).
	Budget Budget
	// UserGroups are the approving user's groups at approval, given to
	// policies at every later decision.
	UserGroups []string
	DenyReason string
	// Revoking is set while backend revocations of an ended task are
	// outstanding in the outbox.
	Revoking bool
	// RequireDPoP: every token of the task must be DPoP-bound (RFC 9449);
	// a mint without a proof is refused. Set at creation, never changed.
	RequireDPoP bool

	CreatedAt  time.Time
	ApprovedAt time.Time // zero until approved
	ExpiresAt  time.Time // set at creation; only ever moves earlier
	ClosedAt   time.Time // zero until closed, denied or expired
}

// EffectiveStatus is the status at now. A task past its expiry is treated as
// expired (approved) or denied (still pending) everywhere, before any
// background job records it.
func (t Task) EffectiveStatus(now time.Time) Status {
	if t.Revoking {
		return StatusRevoking
	}
	if !now.Before(t.ExpiresAt) {
		switch t.Status {
		case StatusApproved:
			return StatusExpired
		case StatusPending:
			return StatusDenied
		}
	}
	return t.Status
}

// Credential is the durable record of something minted for a task.
type Credential struct {
	// ID identifies the credential: an access token's or an ID-JAG's
	// jti, a Vault token's accessor, a Vault lease's id.
	ID        string
	Seq       int64
	TaskID    string
	Kind      CredentialKind
	Agent     Ref
	User      Ref
	Scopes    Scopes
	Audience  string
	IssuedAt  time.Time
	ExpiresAt time.Time
	RevokedAt time.Time // zero while not revoked
	// IdempotencyKey and RequestHash, when set, let a retried mint return
	// this credential instead of minting another.
	IdempotencyKey string
	RequestHash    string
	// StepUpID names the step-up approval this credential was minted
	// under, when a @step_up policy asked for one.
	StepUpID string
	// JKT is the RFC 7638 thumbprint of the key the token is bound to
	// (RFC 9449 cnf.jkt), "" for a bearer token. Introspection answers
	// from it, never from the token.
	JKT string
}

// ShownID is how c is named to auditors and approvers: its jti, or for a
// Vault credential (whose "jti" is an accessor or lease id, a handle on
// the secret) only the SHA-256 of it. Every view of credentials goes
// through it, so a new kind of secret handle is hidden in one place.
func (c Credential) ShownID() string {
	if c.Kind == KindVaultToken || c.Kind == KindVaultLease {
		return "sha256:" + HashID(c.ID)
	}
	return c.ID
}

// Revocation is one entry of the revocation feed: a credential revoked,
// in commit order (Seq is its credential.revoked audit event's).
type Revocation struct {
	Seq       int64
	JTI       string
	TaskID    string
	RevokedAt time.Time
	Reason    string
	// Audience is the revoked credential's, read with the feed (not
	// stored with the entry), so that a resource server is shown only the
	// revocations of audiences it may introspect.
	Audience string
}

// OutboxItem is a backend revocation to carry out until confirmed: a
// credential whose life is not only Errand's record (a Vault lease, …).
type OutboxItem struct {
	ID            int64
	TaskID        string
	Kind          CredentialKind // which names the backend
	Ref           string         // what the backend revokes (lease id, accessor, …)
	CreatedAt     time.Time
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
	AlarmedAt     time.Time
}

// AuditEvent is one entry of the append-only, hash-chained audit log.
type AuditEvent struct {
	Seq    int64
	Time   time.Time
	Type   string
	Actor  Actor
	TaskID string
	// Detail is a JSON object, stored and hashed byte for byte.
	Detail []byte
	Hash   string
	// HashScheme is how Hash was made (HashSchemeJCS for every event
	// appended now; HashSchemeGoJSON for events of older chains).
	HashScheme int
}

// Digest is the SHA-256 of the task's canonical form as a person approving
// it sees it: who asks, for whom, the goal, the scopes, audiences, tool,
// dataset, expiry and version. An approval may name it, so that what was
// approved is exactly what was shown (A05).
func (t Task) Digest() string {
	b, err := json.Marshal(struct {
		ID, Agent, User, Goal, Tool, Dataset string
		Scopes, Audiences                    []string
		ExpiresAt                            string
		Version                              int
	}{t.ID, t.Agent.String(), t.User.String(), t.Goal, t.Tool, t.Dataset,
		t.Scopes.Strings(), t.Audiences, t.ExpiresAt.UTC().Format(time.RFC3339Nano), t.Version})
	if err != nil {
		panic("broker: task not encodable: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
