// Package vault issues HashiCorp Vault dynamic secrets for tasks, with
// github.com/hashicorp/vault/api, and revokes them.
//
// Per task, Errand creates one service token: a child of Errand's own
// token (never an orphan, so it dies with Errand's), not renewable,
// without the default policy, with explicit_max_ttl no longer than the
// task's remaining life, and with policies that allow reading exactly the
// task's approved roles' paths. Every secret of the task is read with that
// token, so revoking its accessor revokes all of the task's leases; Vault's
// own TTL is the backstop. The token is kept sealed in the database; agents
// only ever receive a secret's data and lease metadata.
//
// Each task token carries metadata naming the task, the intent Errand
// recorded before asking for it, and this Errand's instance (derived from
// system_secret), so that the reconciler (TaskTokens) can find tokens
// Errand created but never recorded. Errand's own Vault token needs
// exactly Policy's capabilities; New refuses to start without any of them.
package vault

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/seal"
)

// Auth is how Errand logs in to Vault.
type Auth struct {
	Method       string // "token" or "approle"
	TokenFile    string // method token
	RoleID       string // method approle
	SecretIDFile string // method approle
	Token        string // a token given directly (tests and dev)
}

// Config configures an Issuer.
type Config struct {
	Address string
	Auth    Auth
	Roles   []broker.SecretRole
	// Secret is system_secret: it seals the per-task tokens.
	Secret []byte
	// PolicyPrefix names the per-role policies Errand writes; default "errand-role-".
	PolicyPrefix string
	Timeout      time.Duration
}

// Issuer talks to Vault for the broker (broker.SecretIssuer) and revokes
// task tokens for the outbox (revocation.Backend).
type Issuer struct {
	auth     Auth
	client   *vaultapi.Client
	seal     *seal.Sealer
	prefix   string
	roles    []broker.SecretRole
	instance string

	// foreign remembers accessors whose token is not one of this Errand's
	// task tokens (metadata never changes), so that each is looked up once.
	mu      sync.Mutex
	foreign map[string]bool
}

var _ broker.SecretIssuer = (*Issuer)(nil)

// ForbiddenPrefixes are Vault paths no task may ever reach.
var ForbiddenPrefixes = []string{"auth/", "sys/", "identity/", "cubbyhole/"}

// CheckPath refuses a role path that is empty, relative or under a path
// that controls Vault itself (auth/, sys/, identity/).
func CheckPath(p string) error {
	clean := strings.ToLower(strings.Trim(p, " "))
	if clean == "" || strings.HasPrefix(clean, "/") || strings.Contains(clean, "..") || strings.ContainsAny(clean, "*+ ") {
		return fmt.Errorf("vault path %q must be a plain relative path (no wildcards, no ..)", p)
	}
	for _, f := range ForbiddenPrefixes {
		if strings.HasPrefix(clean+"/", f) {
			return fmt.Errorf("vault path %q is under %s, which no task may reach", p, f)
		}
	}
	return nil
}

// Need is a capability Errand's own Vault token must hold on a path.
type Need struct {
	Path         string
	Capabilities []string
	Why          string
}

// DefaultPolicyPrefix names the per-role policies Errand writes.
const DefaultPolicyPrefix = "errand-role-"

// Needs lists every path Errand's own Vault token uses, with the
// capabilities it needs there; prefix is the role policies' prefix.
func Needs(prefix string) []Need {
	if prefix == "" {
		prefix = DefaultPolicyPrefix
	}
	return []Need{
		{"auth/token/create", []string{"update", "sudo"}, "task tokens with the role policies (sudo: policies Errand's token does not hold)"},
		{"auth/token/revoke-accessor", []string{"update"}, "revoke a task's token, with every lease under it"},
		{"auth/token/lookup-accessor", []string{"update"}, "confirm a revocation; the reconciler reads task tokens' metadata"},
		{"auth/token/accessors", []string{"list", "sudo"}, "the reconciler lists tokens to find task tokens never recorded"},
		{"auth/token/lookup-self", []string{"read"}, "keep Errand's own token alive"},
		{"auth/token/renew-self", []string{"update"}, "keep Errand's own token alive"},
		{"sys/capabilities-self", []string{"update"}, "the capability check at start"},
		{"sys/policies/acl/" + prefix + "*", []string{"update"}, "one read-only policy per role"},
		{"sys/leases/revoke", []string{"update"}, "revoke a lease that would outlive its task"},
	}
}

// Policy is the Vault policy Errand's own token needs, and no more: the
// policy README documents (a test holds the two together).
func Policy(prefix string) string {
	var b strings.Builder
	for _, n := range Needs(prefix) {
		caps := make([]string, len(n.Capabilities))
		for i, c := range n.Capabilities {
			caps[i] = fmt.Sprintf("%q", c)
		}
		fmt.Fprintf(&b, "path %q { capabilities = [%s] }  # %s\n", n.Path, strings.Join(caps, ", "), n.Why)
	}
	return b.String()
}

// checkCapabilities asks Vault (sys/capabilities-self) whether Errand's
// token holds every capability of Needs, and names the first one missing.
func (i *Issuer) checkCapabilities(ctx context.Context) error {
	for _, n := range Needs(i.prefix) {
		paths := []string{n.Path}
		if strings.HasSuffix(n.Path, "*") {
			paths = paths[:0]
			for _, r := range i.roles {
				paths = append(paths, strings.TrimSuffix(n.Path, "*")+r.Name)
			}
		}
		for _, p := range paths {
			caps, err := i.client.Sys().CapabilitiesSelfWithContext(ctx, p)
			var re *vaultapi.ResponseError
			if errors.As(err, &re) && re.StatusCode == 403 {
				return lacks("sys/capabilities-self", "update", "the capability check at start") // the check itself is refused
			}
			if err != nil {
				return fmt.Errorf("vault: cannot check Errand's capabilities on %s (sys/capabilities-self): %w", p, unavailable(err))
			}
			if slices.Contains(caps, "root") {
				continue
			}
			for _, c := range n.Capabilities {
				if !slices.Contains(caps, c) {
					return lacks(p, c, n.Why)
				}
			}
		}
	}
	return nil
}

// lacks is the one line that refuses a start: the path, the capability
// and what Errand needs it for.
func lacks(path, capability, why string) error {
	return fmt.Errorf("vault: Errand's Vault token lacks %q on %s, needed for %s (README, Vault dynamic secrets, lists Errand's policy)", capability, path, why)
}

// New logs in, checks that Errand's token holds every capability of
// Needs, and writes one read-only policy per role.
func New(ctx context.Context, cfg Config) (*Issuer, error) {
	vc := vaultapi.DefaultConfig()
	vc.Address = cfg.Address
	if cfg.Timeout > 0 {
		vc.Timeout = cfg.Timeout
	} else {
		vc.Timeout = 10 * time.Second
	}
	vc.MaxRetries = 0 // the outbox retries; a request must fail fast
	client, err := vaultapi.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	client.SetCloneToken(false)
	s, err := seal.New(cfg.Secret, "errand vault task token v1")
	if err != nil {
		return nil, err
	}
	instance, err := hkdf.Key(sha256.New, cfg.Secret, nil, "errand vault instance v1", 16)
	if err != nil {
		return nil, err
	}
	i := &Issuer{auth: cfg.Auth, client: client, seal: s, prefix: cfg.PolicyPrefix, roles: cfg.Roles,
		instance: hex.EncodeToString(instance), foreign: map[string]bool{}}
	if i.prefix == "" {
		i.prefix = DefaultPolicyPrefix
	}
	for _, r := range cfg.Roles {
		if err := CheckPath(r.Path); err != nil {
			return nil, err
		}
	}
	if err := i.login(ctx, cfg.Auth); err != nil {
		return nil, err
	}
	if err := i.checkCapabilities(ctx); err != nil {
		return nil, err
	}
	for _, r := range cfg.Roles {
		policy := fmt.Sprintf("path %q {\n  capabilities = [\"read\"]\n}\n", r.Path)
		if err := client.Sys().PutPolicyWithContext(ctx, i.policy(r), policy); err != nil {
			return nil, fmt.Errorf("vault: cannot write policy %s: %w", i.policy(r), err)
		}
	}
	return i, nil
}

func (i *Issuer) login(ctx context.Context, a Auth) error {
	switch a.Method {
	case "", "token":
		tok := a.Token
		if tok == "" && a.TokenFile != "" {
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return fmt.Errorf("vault: token_file: %w", err)
			}
			tok = strings.TrimSpace(string(b))
		}
		if tok == "" {
			return errors.New("vault: auth: token_file (or a token) is required")
		}
		i.client.SetToken(tok)
		return nil
	case "approle":
		b, err := os.ReadFile(a.SecretIDFile)
		if err != nil {
			return fmt.Errorf("vault: secret_id_file: %w", err)
		}
		sec, err := i.client.Logical().WriteWithContext(ctx, "auth/approle/login",
			map[string]any{"role_id": a.RoleID, "secret_id": strings.TrimSpace(string(b))})
		if err != nil || sec == nil || sec.Auth == nil {
			return fmt.Errorf("vault: approle login: %v", err)
		}
		i.client.SetToken(sec.Auth.ClientToken)
		return nil
	}
	return fmt.Errorf("vault: auth method %q is not supported (token or approle)", a.Method)
}

func (i *Issuer) policy(r broker.SecretRole) string { return i.prefix + r.Name }

// Metadata keys of a task token.
const (
	metaTask     = "errand_task"
	metaIntent   = "errand_intent"
	metaInstance = "errand_instance"
)

// CreateTaskToken implements broker.SecretIssuer. The token's metadata
// names the task, the intent and this Errand, for TaskTokens.
func (i *Issuer) CreateTaskToken(ctx context.Context, taskID, intentID string, roles []broker.SecretRole, ttl time.Duration) (broker.TaskToken, error) {
	if len(roles) == 0 {
		return broker.TaskToken{}, broker.Errorf(broker.ErrScopeExceedsApproval, "no secret role is approved for this task")
	}
	policies := make([]string, len(roles))
	for n, r := range roles {
		policies[n] = i.policy(r)
	}
	renewable := false
	sec, err := i.client.Auth().Token().CreateWithContext(ctx, &vaultapi.TokenCreateRequest{
		Policies: policies, NoDefaultPolicy: true, TTL: ttl.String(), ExplicitMaxTTL: ttl.String(),
		Renewable: &renewable, DisplayName: "errand-" + taskID, Type: "service",
		Metadata: map[string]string{metaTask: taskID, metaIntent: intentID, metaInstance: i.instance},
	})
	if err != nil {
		return broker.TaskToken{}, unavailable(err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return broker.TaskToken{}, errors.New("vault: token create returned no token")
	}
	sealed, err := i.seal.Seal([]byte(sec.Auth.ClientToken), []byte(taskID))
	if err != nil {
		return broker.TaskToken{}, err
	}
	return broker.TaskToken{Accessor: sec.Auth.Accessor, Sealed: sealed,
		ExpiresAt: time.Now().Add(time.Duration(sec.Auth.LeaseDuration) * time.Second).UTC()}, nil
}

// ReadSecret implements broker.SecretIssuer: a read of path with the task's
// own token, on a client of its own (never Errand's token).
func (i *Issuer) ReadSecret(ctx context.Context, taskID string, t broker.TaskToken, path string) (broker.Secret, error) {
	tok, err := i.seal.Open(t.Sealed, []byte(taskID))
	if err != nil {
		return broker.Secret{}, err
	}
	c, err := i.client.Clone()
	if err != nil {
		return broker.Secret{}, err
	}
	c.SetToken(string(tok))
	sec, err := c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return broker.Secret{}, unavailable(err)
	}
	if sec == nil || sec.LeaseID == "" {
		return broker.Secret{}, fmt.Errorf("vault: %s returned no lease", path)
	}
	return broker.Secret{LeaseID: sec.LeaseID, LeaseDuration: time.Duration(sec.LeaseDuration) * time.Second, Data: sec.Data}, nil
}

// RevokeLease implements broker.SecretIssuer.
func (i *Issuer) RevokeLease(ctx context.Context, leaseID string) error {
	_, err := i.client.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": leaseID, "sync": true})
	return unavailable(err)
}

// Revoke is the outbox's revocation.Backend for kind vault-token: revoke
// the task token by its accessor (with every lease under it), then confirm
// that the accessor is gone. It is idempotent. Only Vault's own answer
// "invalid accessor" to the lookup confirms; a refusal (403: Errand's
// policy lacks a capability), an outage or any other answer is an error,
// which the outbox retries and alarms on.
func (i *Issuer) Revoke(ctx context.Context, item broker.OutboxItem) error {
	// An unknown accessor is not an error here (Vault answers 200 with a
	// warning); the lookup below is what confirms.
	if err := i.client.Auth().Token().RevokeAccessorWithContext(ctx, item.Ref); err != nil && !invalidAccessor(err) {
		return fmt.Errorf("vault: revoke-accessor: %w", err)
	}
	_, err := i.client.Auth().Token().LookupAccessorWithContext(ctx, item.Ref)
	switch {
	case err == nil:
		return errors.New("vault: the task token is still alive after revocation")
	case invalidAccessor(err):
		return nil
	}
	return fmt.Errorf("vault: lookup-accessor cannot confirm the revocation: %w", err)
}

// invalidAccessor reports Vault's own answer for an accessor it does not
// know (any more): 400 with the error "invalid accessor" (alone, or as
// the one line of a "1 error occurred" list).
func invalidAccessor(err error) bool {
	var re *vaultapi.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		return false
	}
	for _, e := range re.Errors {
		for _, line := range strings.Split(e, "\n") {
			if strings.TrimLeft(line, "\t *") == "invalid accessor" {
				return true
			}
		}
	}
	return false
}

// TaskTokens lists the task tokens of this Errand (by their metadata) that
// live in Vault now: auth/token/accessors, then lookup-accessor of every
// accessor not known to be another token's. It fails unless the listing
// is complete, so that the reconciler never takes a missing answer for a
// token that is gone.
func (i *Issuer) TaskTokens(ctx context.Context) ([]broker.VaultTaskToken, error) {
	sec, err := i.client.Logical().ListWithContext(ctx, "auth/token/accessors")
	if err != nil {
		return nil, unavailable(err)
	}
	if sec == nil || sec.Data == nil {
		return nil, errors.New("vault: auth/token/accessors returned nothing")
	}
	keys, _ := sec.Data["keys"].([]any)
	seen := make(map[string]bool, len(keys))
	var out []broker.VaultTaskToken
	for _, k := range keys {
		acc, _ := k.(string)
		if acc == "" {
			continue
		}
		seen[acc] = true
		i.mu.Lock()
		skip := i.foreign[acc]
		i.mu.Unlock()
		if skip {
			continue
		}
		look, err := i.client.Auth().Token().LookupAccessorWithContext(ctx, acc)
		if invalidAccessor(err) {
			continue // gone since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("vault: lookup-accessor during the reconciliation: %w", unavailable(err))
		}
		t, ours := i.taskToken(acc, look)
		if !ours {
			i.mu.Lock()
			i.foreign[acc] = true
			i.mu.Unlock()
			continue
		}
		out = append(out, t)
	}
	i.mu.Lock()
	for acc := range i.foreign {
		if !seen[acc] {
			delete(i.foreign, acc)
		}
	}
	i.mu.Unlock()
	return out, nil
}

// taskToken reads a lookup-accessor answer as one of this Errand's task
// tokens, if it is one.
func (i *Issuer) taskToken(accessor string, look *vaultapi.Secret) (broker.VaultTaskToken, bool) {
	if look == nil || look.Data == nil {
		return broker.VaultTaskToken{}, false
	}
	meta, _ := look.Data["meta"].(map[string]any)
	str := func(k string) string { v, _ := meta[k].(string); return v }
	if meta == nil || str(metaInstance) != i.instance || str(metaTask) == "" {
		return broker.VaultTaskToken{}, false
	}
	t := broker.VaultTaskToken{Accessor: accessor, TaskID: str(metaTask), IntentID: str(metaIntent)}
	if n, ok := look.Data["creation_time"].(json.Number); ok {
		if sec, err := n.Int64(); err == nil {
			t.CreatedAt = time.Unix(sec, 0).UTC()
		}
	}
	return t, true
}

// unavailable reports a Vault that cannot be reached (or answers 5xx) as
// an outage, never as a refusal.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	var re *vaultapi.ResponseError
	if errors.As(err, &re) && re.StatusCode < 500 {
		return fmt.Errorf("vault: %w", err)
	}
	return fmt.Errorf("%w: vault: %v", broker.ErrUnavailable, err)
}

// Run keeps Errand's own Vault token alive until ctx ends: a renewable
// token is renewed at half its TTL; when renewal fails or the token cannot
// be renewed any more, an AppRole identity logs in again. A token without
// TTL (root, or a periodic token renewed elsewhere) needs nothing. Task
// tokens are children of this token, so letting it lapse would revoke every
// task's secrets early — failing closed, but needlessly.
func (i *Issuer) Run(ctx context.Context) error {
	var lastTTL time.Duration // what the token had left at the last good look
	for {
		wait := i.keepAlive(ctx, &lastTTL)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (i *Issuer) keepAlive(ctx context.Context, lastTTL *time.Duration) time.Duration {
	self, err := i.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return i.relogin(ctx, *lastTTL)
	}
	ttl, _ := self.TokenTTL()
	*lastTTL = ttl
	if ttl == 0 {
		return 10 * time.Minute // does not expire
	}
	if renewable, _ := self.TokenIsRenewable(); renewable {
		sec, err := i.client.Auth().Token().RenewSelfWithContext(ctx, 0)
		if err == nil && sec != nil && sec.Auth != nil && sec.Auth.LeaseDuration > 0 {
			*lastTTL = time.Duration(sec.Auth.LeaseDuration) * time.Second
			return max(time.Duration(sec.Auth.LeaseDuration)*time.Second/2, time.Second)
		}
	}
	if ttl > 2*time.Minute {
		return ttl / 2
	}
	return i.relogin(ctx, ttl)
}

// relogin logs in again with AppRole; a token identity cannot, and is
// retried soon (the operator must replace the token file). ttl is what the
// current token has left (0 when unknown): a renewal that failed on a
// transient error is tried again well before the token lapses, never only
// after a fixed 30 s that a short-lived token would not survive.
func (i *Issuer) relogin(ctx context.Context, ttl time.Duration) time.Duration {
	if i.auth.Method != "approle" {
		if i.auth.TokenFile != "" {
			_ = i.login(ctx, i.auth) // the file may hold a new token
		}
		if ttl > 0 {
			return min(max(ttl/4, 250*time.Millisecond), 30*time.Second)
		}
		return 30 * time.Second
	}
	if err := i.login(ctx, i.auth); err != nil {
		return 10 * time.Second
	}
	return time.Second
}
