package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Status is a task's state. pending → approved | denied;
// approved → closed | expired. Terminal states never change again.
type Status string

const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusDenied   Status = "denied"
	StatusClosed   Status = "closed"
	StatusExpired  Status = "expired"
)

// Valid reports whether s is one of the five states.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusApproved, StatusDenied, StatusClosed, StatusExpired:
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
	DenyReason        string

	CreatedAt  time.Time
	ApprovedAt time.Time // zero until approved
	ExpiresAt  time.Time // set at creation; only ever moves earlier
	ClosedAt   time.Time // zero until closed, denied or expired
}

// EffectiveStatus is the status at now. A task past its expiry is treated as
// expired (approved) or denied (still pending) everywhere, before any
// background job records it.
func (t Task) EffectiveStatus(now time.Time) Status {
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
	JTI       string
	Seq       int64
	TaskID    string
	Kind      string // "jwt"
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
}

// Audit event types of DESIGN.md.
const (
	EventTaskCreated       = "task.created"
	EventTaskApproved      = "task.approved"
	EventTaskDenied        = "task.denied"
	EventTaskClosed        = "task.closed"
	EventTaskExpired       = "task.expired"
	EventCredentialIssued  = "credential.issued"
	EventCredentialRevoked = "credential.revoked"
	EventRequestRefused    = "request.refused"
	EventBackendRevokeFail = "backend.revoke_failed"
)

// EventTypes lists every audit event type, for filter validation.
var EventTypes = []string{
	EventTaskCreated, EventTaskApproved, EventTaskDenied, EventTaskClosed, EventTaskExpired,
	EventCredentialIssued, EventCredentialRevoked, EventRequestRefused, EventBackendRevokeFail,
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
