package broker

import (
	"context"
	"sort"
	"time"
)

// Store is the storage port: tasks, credentials, the audit log, step-up
// approvals, secrets, the revocation feed and outboxes, and the database's
// clock. Every method is required; each store implements each, and the
// shared suite (package storetest) calls every one of them. Implementations
// turn their driver's errors into ErrNotFound and ErrUnavailable.
type Store interface {
	// InTx runs fn exactly once in one transaction and commits it durably
	// when fn returns nil; any error rolls everything back.
	InTx(ctx context.Context, fn func(Tx) error) error
	// InsertCredentialIfVersion records c and its audit event, committed
	// durably together, if task c.TaskID is still at version and lives
	// (approved, not revoking, unexpired by the database's clock); false,
	// and nothing recorded, otherwise. It is Mint's optimistic branch: c
	// was decided on a snapshot of the task at that version, and every
	// change of a task's state bumps its version. It sets c.Seq. A store
	// may commit several concurrent calls in one transaction.
	InsertCredentialIfVersion(ctx context.Context, c *Credential, version int, event AuditEvent) (bool, error)
	Reader
	// Ping reports whether the store can be reached (ErrUnavailable if not).
	Ping(ctx context.Context) error
	ReplayCache
	Outbox
	Deliveries
}

// Clock is the database's own time. Every expiry decision is taken on it,
// whatever the replica's clock says, so replicas with skewed clocks agree
// (F07). A store without a server (SQLite) returns its own clock.
type Clock interface {
	Now(ctx context.Context) (time.Time, error)
}

// ReplayCache remembers the identifiers (jti) of JWTs Errand accepted where
// a second use must be refused: client assertions (RFC 7523 §3, kind
// ReplayClientAssertion) and DPoP proofs (RFC 9449 §11.1, kind
// ReplayDPoP). It is shared by every replica (the store holds it).
type ReplayCache interface {
	// RememberJTI records jti under kind until expiresAt and reports
	// whether it was fresh: false when the same kind and jti were
	// remembered before and have not expired by the store's clock. The
	// check and the record are one atomic step, so of two concurrent
	// calls with the same jti exactly one is fresh. jti is compared
	// exactly and kept only as a digest; a caller whose identifiers are
	// unique per issuer qualifies jti with the issuer. Expired entries
	// are deleted along the way. ErrUnavailable when the store cannot be
	// reached: the caller then refuses, never accepts.
	RememberJTI(ctx context.Context, kind, jti string, expiresAt time.Time) (fresh bool, err error)
}

// Kinds of remembered JWT identifiers (ReplayCache).
const (
	ReplayClientAssertion = "client_assertion"
	ReplayDPoP            = "dpop"
)

// Tx is the write side, used only inside Store.InTx.
type Tx interface {
	Clock
	InsertTask(ctx context.Context, t *Task) error
	// LockTask reads a task and locks it until the transaction ends, so
	// that minting and closing one task are serialised. ErrNotFound.
	LockTask(ctx context.Context, id string) (Task, error)
	// LockTaskChecked is LockTask, whether the task's agent is suspended
	// and the database's clock once the lock is held, read together (one
	// round trip where the store can).
	LockTaskChecked(ctx context.Context, id string) (t Task, suspended bool, now time.Time, err error)
	// UpdateTask writes t, which must be at the stored version + 1: every
	// change of a task's state bumps its version (an error if not: a bug).
	UpdateTask(ctx context.Context, t Task) error
	InsertCredential(ctx context.Context, c *Credential) error
	// CredentialByIdempotencyKey finds the credential minted for the task
	// with key. ErrNotFound.
	CredentialByIdempotencyKey(ctx context.Context, taskID, key string) (Credential, error)
	// RevokeCredentials marks every unrevoked credential of the task
	// revoked at `at` and returns them.
	RevokeCredentials(ctx context.Context, taskID string, at time.Time) ([]Credential, error)
	// AppendAudit appends events to the hash chain, assigning Seq and Hash
	// in place. It serialises writers until the transaction ends, so it
	// belongs at the end of one (followed only by InsertRevocations).
	AppendAudit(ctx context.Context, events ...AuditEvent) error
	RevocationTx
	StepUpTx
	SecretTx
	BackchannelTx
	NoticeTx
}

// StatusCache is an in-process cache of active credentials, so that
// introspecting an active token needs no database round trip, kept exact
// across replicas: every replica applies the revocation feed and records
// how far, and a revocation returns only once every live replica has
// applied it (Revoked); a replica that cannot confirm it is up to date
// answers from the database.
type StatusCache interface {
	// Lookup returns an active credential, its task and the time the
	// cache vouches for, or false when the database must answer.
	Lookup(jti string) (Credential, Task, time.Time, bool)
	// Generation changes whenever the cache applies a revocation; Keep
	// stores what a database read started at generation gen returned,
	// unless a revocation was applied since.
	Generation() uint64
	Keep(gen uint64, c Credential, t Task)
	// Revoked is called after a revocation up to feed position seq
	// committed: it drops the credentials here and waits until every live
	// replica has applied the feed that far.
	Revoked(ctx context.Context, seq int64, jtis []string) error
}

// RevocationTx is the write side of the revocation engine.
type RevocationTx interface {
	// LockDue locks up to limit pending or approved tasks whose expiry is
	// at or before now, skipping rows other replicas hold.
	LockDue(ctx context.Context, now time.Time, limit int) ([]Task, error)
	// LockOpenTasks locks an agent's pending and approved tasks.
	LockOpenTasks(ctx context.Context, agent Ref) ([]Task, error)
	// RevokeCredential marks one unrevoked credential revoked; ErrNotFound
	// if there is none.
	RevokeCredential(ctx context.Context, jti string, at time.Time) (Credential, error)
	// InsertRevocations adds entries to the feed; call it after AppendAudit.
	InsertRevocations(ctx context.Context, rs []Revocation) error
	// Enqueue adds backend revocations to the outbox.
	Enqueue(ctx context.Context, items []OutboxItem) error
	SetSuspended(ctx context.Context, agent Ref, reason, by string, at time.Time) error
	// LockAgent serialises, until the transaction ends, the transactions
	// that decide on one agent's standing (creating a task against its
	// pending cap, suspending it), and then reads whether the agent is
	// suspended and how many of its tasks await a decision at now
	// (counting at most limit). Without it two concurrent creates could
	// both see room under the cap, or a create could miss a suspension
	// committed while it decided.
	LockAgent(ctx context.Context, agent Ref, now time.Time, limit int) (suspended bool, pending int, err error)
	// IsSuspended reads a suspension inside the transaction.
	IsSuspended(ctx context.Context, agent Ref) (bool, error)
	// ClearSuspended lifts a suspension; false if there was none.
	ClearSuspended(ctx context.Context, agent Ref) (bool, error)
	// MarkAlarmed records that an outbox item's failure was raised.
	MarkAlarmed(ctx context.Context, id int64, at time.Time) error
}

// Reader is the read side. Lists return at most Limit+1 rows so that the
// caller can tell whether more remain.
type Reader interface {
	Clock
	Task(ctx context.Context, id string) (Task, error)
	ListTasks(ctx context.Context, f TaskFilter) ([]Task, error)
	Credential(ctx context.Context, jti string) (Credential, error)
	// CredentialAndTask reads a credential, its task and the database's
	// clock together, for introspection.
	CredentialAndTask(ctx context.Context, jti string) (Credential, Task, time.Time, error)
	Credentials(ctx context.Context, f HistoryFilter) ([]Credential, error)
	AuditEvents(ctx context.Context, f HistoryFilter) ([]AuditEvent, error)
	// AuditHead is the seq and hash of the newest audit event (0 and
	// GenesisHash for an empty log).
	AuditHead(ctx context.Context) (int64, string, error)
	// Revocations lists the feed after a position, in commit order, each
	// entry with its credential's audience.
	Revocations(ctx context.Context, afterSeq int64, limit int) ([]Revocation, error)
	Suspended(ctx context.Context, agent Ref) (bool, error)
	StepUpReader
}

// Outbox is the store side of the backend-revocation worker.
type Outbox interface {
	// ClaimOutbox leases up to limit items due at now for lease, so that
	// other replicas skip them while this one calls the backend.
	ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]OutboxItem, error)
	// CompleteOutbox marks an item done; when it was its task's last, the
	// task stops reading "revoking".
	CompleteOutbox(ctx context.Context, id int64, at time.Time) error
	// RetryOutbox records a failed attempt and when to try again, unless
	// the item was claimed again since (its attempts moved on) or is done:
	// a worker whose lease ran out never overrides the next one.
	RetryOutbox(ctx context.Context, id int64, attempts int, next time.Time, errMsg string) error
}

// TaskFilter selects a principal's tasks in Seq order.
type TaskFilter struct {
	Agent, User *Ref   // exactly one is set
	Status      Status // effective status at Now; "" for any
	Now         time.Time
	AfterSeq    int64
	Limit       int
}

// HistoryFilter selects audit events or credentials in Seq order. Actor,
// Agent and User are "<issuer>#<subject>" or a bare subject. For events,
// Agent and User match the task's agent or user (or the actor), and Code a
// refusal's code; for credentials, Type is the credential kind and Actor
// matches the agent or the user.
type HistoryFilter struct {
	TaskID, Actor, Type string
	Agent, User, Code   string
	Since, Until        time.Time // zero: unbounded
	AfterSeq            int64
	Limit               int
}

// AccessToken is what a token issuer signs: the claims of docs/design.md's
// RFC 9068 profile, decided by the broker. The issuer adds iss and applies.
type AccessToken struct {
	Subject   string // the user
	Act       Ref    // the agent (RFC 8693 actor)
	ClientID  string // the agent
	Audience  string
	Scope     string // space-separated canonical scopes
	TaskID    string
	JTI       string
	IssuedAt  time.Time
	NotBefore time.Time
	ExpiresAt time.Time
	// JKT, when set, binds the token to a DPoP key: its cnf claim
	// (RFC 9449 §6.1).
	JKT string
}

// TokenIssuer signs access tokens and verifies its own tokens.
type TokenIssuer interface {
	Sign(ctx context.Context, t AccessToken) (string, error)
	// Verify checks the signature, header and claims of one of Errand's
	// own tokens at now; any failure is ErrInvalidToken.
	Verify(ctx context.Context, raw string) (AccessToken, error)
}

// SigningKey is a stored token-signing key. Private is sealed by the token
// issuer (with a key derived from system_secret); the store never sees it
// in the clear.
type SigningKey struct {
	KID       string
	Alg       string
	Private   []byte
	PublicJWK []byte
	State     string // "next", "current", "previous" or "retired"
	CreatedAt time.Time
	// ActivatedAt is when it became current, DeactivatedAt when it became
	// previous, RetiredAt when it was retired (zero until then).
	ActivatedAt, DeactivatedAt, RetiredAt time.Time
}

// Signing-key states: a key is published as next before it signs, signs as
// current, still verifies as previous, and is retired (neither served nor
// accepted). States only move forward.
const (
	KeyNext     = "next"
	KeyCurrent  = "current"
	KeyPrevious = "previous"
	KeyRetired  = "retired"
)

// KeyChange is a change to the signing keys: keys to insert, states to set
// (by kid), and the audit events that record it.
type KeyChange struct {
	Insert []SigningKey
	States map[string]string
	Events []AuditEvent
}

// Ordered lists the kids of States in an order that keeps at most one key
// next and one current at every step: retirements first, then keys leaving
// current, then keys entering it.
func (c KeyChange) Ordered() []string {
	var out []string
	for _, want := range []string{KeyRetired, KeyPrevious, KeyCurrent, KeyNext} {
		kids := make([]string, 0, len(c.States))
		for kid, st := range c.States {
			if st == want {
				kids = append(kids, kid)
			}
		}
		sort.Strings(kids)
		out = append(out, kids...)
	}
	return out
}

// Empty reports whether the change does nothing.
func (c KeyChange) Empty() bool { return len(c.Insert) == 0 && len(c.States) == 0 }

// KeyStore keeps signing keys so that every replica signs with the same keys.
type KeyStore interface {
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	// InsertCurrentKey stores k as the current key unless a current key
	// already exists, in which case it returns false and stores nothing.
	InsertCurrentKey(ctx context.Context, k SigningKey) (bool, error)
	// ChangeKeys runs plan on the stored keys and the store's time in one
	// transaction that holds every key row locked (replicas serialise
	// here), and applies the change it returns, with its audit events.
	ChangeKeys(ctx context.Context, plan func(keys []SigningKey, now time.Time) (KeyChange, error)) (KeyChange, error)
}
