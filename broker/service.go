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

// Defaults of the limits in docs/design.md.
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
	BackendKinds []CredentialKind
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
	backend map[CredentialKind]bool
	policy  Policy
	budget  Budget
	stepTTL time.Duration
	cache   StatusCache
	// webhooks subscribe to notices (notice.go).
	webhooks []Webhook
	snaps    taskSnaps
	dbClock  dbClock
	// quickMints counts the mints recorded on a snapshot.
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
	s.secrets, s.roles, s.backend = cfg.Secrets, map[string]SecretRole{}, map[CredentialKind]bool{}
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
