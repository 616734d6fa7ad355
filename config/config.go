// Package config reads and validates errand.yaml. Unknown keys and every
// inconsistency stop start-up with one line naming the key.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/issuer/vault"
	"github.com/errandhq/errand/policy"
)

// Config is errand.yaml.
type Config struct {
	Listen      string     `yaml:"listen"`
	PublicURL   string     `yaml:"public_url"`
	DatabaseURL string     `yaml:"database_url"`
	Issuers     []Issuer   `yaml:"issuers"`
	Grants      []Grant    `yaml:"grants"`
	Actions     []Action   `yaml:"actions"`
	Audiences   []Audience `yaml:"audiences"`
	DenyActions []string   `yaml:"deny_actions"`
	Limits      Limits     `yaml:"limits"`
	// TrustedProxies are the CIDRs (or addresses) of the reverse proxies
	// in front of Errand: only from them is the client address taken from
	// X-Forwarded-For (its rightmost hop that is not a trusted proxy).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// PolicyEngine is the language of the policies: cedar (the default)
	// or opa (Rego, evaluated in process).
	PolicyEngine string `yaml:"policy_engine,omitempty"`
	// Policies are glob patterns of policy files (.cedar, or .rego with
	// opa), and PolicySchema an optional Cedar schema they must validate
	// against; relative paths are read from the config file's directory.
	Policies     []string `yaml:"policies"`
	PolicySchema string   `yaml:"policy_schema"`
	// PolicyData is a JSON object Rego policies read as data (opa only),
	// and PolicyTimeout one Rego decision's time budget (opa only,
	// default 1s, wall-clock).
	PolicyData    string   `yaml:"policy_data,omitempty"`
	PolicyTimeout Duration `yaml:"policy_timeout,omitempty"`
	SystemSecret  string   `yaml:"system_secret"`
	SigningAlg    string   `yaml:"signing_alg"`
	// AuditAnchorEvery logs the audit chain's head (seq and hash) this
	// often, for an external system to keep; default 10m, "off" never.
	AuditAnchorEvery string `yaml:"audit_anchor_every"`
	Vault            *Vault `yaml:"vault"`
	Keys             Keys   `yaml:"keys"`
	TLS              *TLS   `yaml:"tls"`
	// DPoP configures the checking of DPoP proofs (RFC 9449).
	DPoP DPoP `yaml:"dpop"`
	// IDJAGTargets are the authorization servers Errand issues ID-JAGs
	// for (idjag.go).
	IDJAGTargets []IDJAGTarget `yaml:"id_jag_targets"`
	// Notifications are the webhooks told of tasks and approvals
	// (notifications.go).
	Notifications Notifications `yaml:"notifications"`
	// Sessions are the timeouts of people's browser sessions (signin.go).
	Sessions Sessions `yaml:"sessions"`
	// Dir is the directory of the config file, for relative paths.
	Dir string `yaml:"-"`
}

// DPoP configures the checking of DPoP proofs.
type DPoP struct {
	// NonceEvery, when set, makes a server nonce required in every proof,
	// a new one issued this often (RFC 9449 §8); default none.
	NonceEvery time.Duration `yaml:"nonce_every"`
}

// TLS makes serve answer HTTPS itself (TLS 1.2 and later).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires every client to present a
	// certificate signed by one of its CAs (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Keys is the signing keys' rotation.
type Keys struct {
	// RotateEvery is how long a key signs before the next one takes over
	// (default 24h; "off": only errand keys rotate).
	RotateEvery string `yaml:"rotate_every"`
	// Overlap is how long a key keeps verifying after it stopped signing
	// (default the longer of 1h and token_ttl_max + JWKS cache + leeway,
	// which is also its minimum).
	Overlap string `yaml:"overlap"`
}

// Vault configures dynamic secrets.
type Vault struct {
	Address      string      `yaml:"address"`
	Auth         VaultAuth   `yaml:"auth"`
	Roles        []VaultRole `yaml:"roles"`
	PolicyPrefix string      `yaml:"policy_prefix"`
	// ReconcileInterval is how often the reconciler looks in Vault for
	// task tokens created but never recorded (default 1m).
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
}

// VaultAuth is how Errand logs in to Vault.
type VaultAuth struct {
	Method       string `yaml:"method"`
	TokenFile    string `yaml:"token_file"`
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
}

// VaultRole maps a catalog action to a dynamic-secret path. Name, which
// agents ask for, defaults to the path's last segment.
type VaultRole struct {
	Name   string `yaml:"name"`
	Action string `yaml:"action"`
	Path   string `yaml:"path"`
}

// Issuer is a trusted identity provider.
type Issuer struct {
	URL              string   `yaml:"url"`
	Audience         string   `yaml:"audience"`
	Kind             string   `yaml:"kind"`
	GroupsClaim      string   `yaml:"groups_claim"`
	AuditorGroup     string   `yaml:"auditor_group"`
	AdminGroup       string   `yaml:"admin_group"`
	Algorithms       []string `yaml:"algorithms"`
	MaxTokenLifetime Duration `yaml:"max_token_lifetime"`
	// Subjects restricts which subjects the issuer may vouch for.
	Subjects []string `yaml:"subjects"`
	// ClientID, on a user issuer, lets people sign in with it (signin.go):
	// Errand's client there, which must be the issuer's audience.
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client's secret; none for a public client.
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectPath is the sign-in callback path (default /ui/callback).
	RedirectPath string `yaml:"redirect_path"`
	// Scopes asked at sign-in (default openid profile email).
	Scopes []string `yaml:"scopes"`
	// SPIFFE makes the issuer a SPIFFE trust domain (JWT-SVIDs); its url
	// is then spiffe://<trust_domain> and may be left out.
	SPIFFE *SPIFFE `yaml:"spiffe"`
}

// SPIFFE is a trust domain whose JWT-SVIDs identify agents or resource
// servers, and where its bundle comes from (exactly one source).
type SPIFFE struct {
	TrustDomain string       `yaml:"trust_domain"`
	Bundle      SPIFFEBundle `yaml:"bundle"`
	// X509SVID accepts the trust domain's X.509-SVIDs as mutual-TLS
	// client certificates (with tls configured, Errand asks for one).
	X509SVID bool `yaml:"x509_svid"`
}

// AcceptsX509SVIDs reports whether an issuer takes X.509-SVIDs.
func (c *Config) AcceptsX509SVIDs() bool {
	for _, is := range c.Issuers {
		if is.SPIFFE != nil && is.SPIFFE.X509SVID {
			return true
		}
	}
	return false
}

// SPIFFEBundle is the source of a trust domain's bundle.
type SPIFFEBundle struct {
	// EndpointURL is a SPIFFE bundle endpoint: https_web profile, or
	// https_spiffe with EndpointSPIFFEID and BootstrapFile.
	EndpointURL      string `yaml:"endpoint_url"`
	EndpointSPIFFEID string `yaml:"endpoint_spiffe_id"`
	BootstrapFile    string `yaml:"bootstrap_file"`
	// CAFile replaces the system roots for an https_web endpoint.
	CAFile            string `yaml:"ca_file"`
	OIDCDiscoveryURL  string `yaml:"oidc_discovery_url"`
	File              string `yaml:"file"`
	WorkloadAPISocket string `yaml:"workload_api_socket"`
}

// Grant is what members of a group of one user issuer may delegate.
// Issuer may be left out only when a single user issuer is configured.
type Grant struct {
	Issuer    string   `yaml:"issuer"`
	Group     string   `yaml:"group"`
	Scopes    []string `yaml:"scopes"`
	Audiences []string `yaml:"audiences"`
}

// Action is an entry of the action catalog.
type Action struct {
	Name  string `yaml:"name"`
	Class string `yaml:"class"`
	Risk  string `yaml:"risk"`
	// Description is shown to approvers beside each scope of the action.
	Description string `yaml:"description"`
	line        int
}

// UnmarshalYAML records the entry's line, so errors can name it.
func (a *Action) UnmarshalYAML(n *yaml.Node) error {
	type plain Action
	if err := n.Decode((*plain)(a)); err != nil {
		return err
	}
	a.line = n.Line
	return nil
}

var actionRef = regexp.MustCompile(`^actions\[(\d+)\]`)

// Audience is a resource server, written as a URL or as a mapping.
type Audience struct {
	URL           string   `yaml:"url"`
	Environment   string   `yaml:"environment"`
	Introspectors []string `yaml:"introspectors"`
	// AnyIntrospector opts the audience in to introspection (and the
	// revocation feed) by any resource server; without it and without
	// introspectors, none may.
	AnyIntrospector bool `yaml:"any_introspector"`
	// CaseInsensitive: the resource server treats resources differing
	// only in case as one (GitHub); Errand then keeps them in lower case.
	CaseInsensitive bool `yaml:"case_insensitive"`
}

// UnmarshalYAML accepts a bare URL string.
func (a *Audience) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		a.URL = n.Value
		return nil
	}
	type plain Audience
	return n.Decode((*plain)(a))
}

// Limits bound lifetimes and rates.
type Limits struct {
	TokenTTLMax time.Duration `yaml:"token_ttl_max"`
	TaskTTLMax  time.Duration `yaml:"task_ttl_max"`
	// PendingTasksPerAgent caps an agent's tasks awaiting approval (default 20).
	PendingTasksPerAgent int `yaml:"pending_tasks_per_agent"`
	// PrincipalRPS and AddressRPS are requests per second per principal and
	// per client address (defaults 50 and 200; bursts are twice that).
	// AddressOff turns the address limiter off (address_rps: off), for a
	// front proxy that limits.
	PrincipalRPS float64 `yaml:"principal_rps"`
	AddressRPS   float64 `yaml:"address_rps"`
	AddressOff   bool    `yaml:"-"`
	// CredentialsPerTask and ResourcesPerTask are every task's budget:
	// credentials it may mint, and distinct resources they may cover
	// (default 0, unlimited). A task request may only lower them.
	CredentialsPerTask int `yaml:"credentials_per_task"`
	ResourcesPerTask   int `yaml:"resources_per_task"`
	// StepUpTTL is how long a step-up approval waits, and how long an
	// approved one may be used (default 15m).
	StepUpTTL time.Duration `yaml:"step_up_ttl"`
	// StreamsPerPrincipal and StreamsPerReplica cap the revocation streams
	// open on one replica: per resource server, and in all (defaults 4 and
	// 2000; 429 beyond).
	StreamsPerPrincipal int `yaml:"streams_per_principal"`
	StreamsPerReplica   int `yaml:"streams_per_replica"`
}

// UnmarshalYAML decodes each limit into its typed field: durations such
// as 5m or 8h, whole numbers, rates. Every bad value is reported, each
// naming its key and line, as a decoding error collected with the rest of
// the file's problems.
func (l *Limits) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: limits: a mapping of limits, such as {token_ttl_max: 5m}", n.Line)}}
	}
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		if msg := l.decode(k, v); msg != "" {
			errs = append(errs, fmt.Sprintf("line %d: limits.%s: %s", v.Line, k, msg))
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// decode sets the limit k from v; the result says what is wrong with v.
// An unknown k is left to the unknown-key check.
func (l *Limits) decode(k string, v *yaml.Node) string {
	var msg string
	switch k {
	case "token_ttl_max":
		l.TokenTTLMax, msg = parseDuration(v)
	case "task_ttl_max":
		l.TaskTTLMax, msg = parseDuration(v)
	case "step_up_ttl":
		l.StepUpTTL, msg = parseDuration(v)
	case "pending_tasks_per_agent":
		l.PendingTasksPerAgent, msg = parseWhole(v, 1)
	case "streams_per_principal":
		l.StreamsPerPrincipal, msg = parseWhole(v, 1)
	case "streams_per_replica":
		l.StreamsPerReplica, msg = parseWhole(v, 1)
	case "credentials_per_task": // 0: unlimited
		l.CredentialsPerTask, msg = parseWhole(v, 0)
	case "resources_per_task":
		l.ResourcesPerTask, msg = parseWhole(v, 0)
	case "principal_rps":
		l.PrincipalRPS, msg = parseRate(v)
	case "address_rps":
		if v.Kind == yaml.ScalarNode && v.Value == "off" {
			l.AddressOff, l.AddressRPS = true, 0
			return ""
		}
		l.AddressRPS, msg = parseRate(v)
	}
	return msg
}

// MarshalYAML writes the limits as they are read: durations as durations,
// address_rps "off" when the address limiter is off.
func (l Limits) MarshalYAML() (any, error) {
	var address any = l.AddressRPS
	if l.AddressOff {
		address = "off"
	}
	return struct {
		TokenTTLMax          string  `yaml:"token_ttl_max"`
		TaskTTLMax           string  `yaml:"task_ttl_max"`
		PendingTasksPerAgent int     `yaml:"pending_tasks_per_agent"`
		PrincipalRPS         float64 `yaml:"principal_rps"`
		AddressRPS           any     `yaml:"address_rps"`
		CredentialsPerTask   int     `yaml:"credentials_per_task"`
		ResourcesPerTask     int     `yaml:"resources_per_task"`
		StepUpTTL            string  `yaml:"step_up_ttl"`
		StreamsPerPrincipal  int     `yaml:"streams_per_principal"`
		StreamsPerReplica    int     `yaml:"streams_per_replica"`
	}{l.TokenTTLMax.String(), l.TaskTTLMax.String(), l.PendingTasksPerAgent, l.PrincipalRPS, address,
		l.CredentialsPerTask, l.ResourcesPerTask, l.StepUpTTL.String(), l.StreamsPerPrincipal, l.StreamsPerReplica}, nil
}

// The defaults of the limits that the server applies when they are 0,
// written out so that the effective configuration shows them.
const (
	defaultPrincipalRPS        = 50
	defaultAddressRPS          = 200
	defaultStreamsPerPrincipal = 4
	defaultStreamsPerReplica   = 2000
	defaultMaxTokenLifetime    = 24 * time.Hour
)

var notFound = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlError puts a decoding error on one line, in the words of the file.
func yamlError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n")
	msg = notFound.ReplaceAllString(msg, `unknown key "$1"`)
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// Load reads path, expands ${VAR} references from the environment, applies
// the ERRAND_SYSTEM_SECRET and ERRAND_DATABASE_URL overrides and validates.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(raw, os.Getenv, filepath.Dir(path))
}

// Proxies parses trusted_proxies: CIDRs, or single addresses.
func (c *Config) Proxies() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for i, v := range c.TrustedProxies {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("config: trusted_proxies[%d]: %q is neither a CIDR nor an address", i, v)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// catalogKeys are the top-level keys LoadCatalog needs.
var catalogKeys = map[string]bool{"issuers": true, "grants": true, "actions": true, "audiences": true,
	"deny_actions": true, "policies": true, "policy_schema": true, "policy_engine": true,
	"policy_data": true, "policy_timeout": true, "notifications": true}

// LoadCatalog reads only what policy decisions need from a config file:
// the catalog (actions, audiences and their environments, grants) and the
// policy files, for `errand policy test` in a policy author's CI, where the
// database, the secrets and their environment variables are absent.
func LoadCatalog(path string) (*Config, *broker.Catalog, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	// The secrets and addresses of serve may be unset here; what the
	// catalog and the policies are made of may not.
	c := Config{Dir: filepath.Dir(path)}
	probs, err := decodeDocument(raw, os.Getenv, func(top string) bool { return !catalogKeys[top] }, &c)
	if err != nil {
		return nil, nil, err
	}
	cat, err := c.Catalog()
	if err != nil {
		err = fmt.Errorf("config: %w", err)
	}
	if err := joinProblems(probs, err); err != nil {
		return nil, nil, err
	}
	return &c, cat, nil
}

// Parse is Load on bytes, with getenv for the environment; relative paths
// are read from the working directory.
func Parse(raw []byte, getenv func(string) string) (*Config, error) {
	return parse(raw, getenv, ".")
}

func parse(raw []byte, getenv func(string) string, dir string) (*Config, error) {
	// Only a value that an override replaces may name an unset variable.
	overridden := func(top string) bool {
		return top == "system_secret" && getenv("ERRAND_SYSTEM_SECRET") != "" ||
			top == "database_url" && getenv("ERRAND_DATABASE_URL") != ""
	}
	c := Config{Dir: dir}
	probs, err := decodeDocument(raw, getenv, overridden, &c)
	if err != nil {
		return nil, err
	}
	if v := getenv("ERRAND_SYSTEM_SECRET"); v != "" {
		c.SystemSecret = v
	}
	if v := getenv("ERRAND_DATABASE_URL"); v != "" {
		c.DatabaseURL = v
	}
	// Validated even when decoding found problems, so that every problem
	// is reported in one pass.
	if err := joinProblems(probs, c.Validate()); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the config and fills defaults. Every problem is
// returned, one a line, as "config: <key>: <what>".
func (c *Config) Validate() error {
	var errs []error
	bad := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	_, err := c.Proxies()
	bad(err)
	u, err := url.Parse(c.PublicURL)
	if c.PublicURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad(errors.New("config: public_url: must be an absolute http(s) URL"))
		u = &url.URL{}
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.TLS != nil {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			bad(errors.New("config: tls: cert_file and key_file are required"))
		}
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = c.path(c.TLS.CertFile), c.path(c.TLS.KeyFile), c.path(c.TLS.ClientCAFile)
		if u.Scheme != "https" {
			bad(errors.New("config: public_url: must be https when tls is set: it is the URL clients see, and the issuer of every token"))
		}
		if c.TLS.CertFile != "" && c.TLS.KeyFile != "" {
			if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
				bad(fmt.Errorf("config: tls.cert_file, tls.key_file: %v", err))
			}
		}
		if c.TLS.ClientCAFile != "" {
			if raw, err := os.ReadFile(c.TLS.ClientCAFile); err != nil {
				bad(fmt.Errorf("config: tls.client_ca_file: %v", err))
			} else if !x509.NewCertPool().AppendCertsFromPEM(raw) {
				bad(errors.New("config: tls.client_ca_file: no PEM certificate in it"))
			}
		}
	}
	if c.DatabaseURL == "" {
		bad(errors.New("config: database_url: required (or ERRAND_DATABASE_URL)"))
	}
	if len(c.SystemSecret) < 32 {
		bad(errors.New("config: system_secret: required, at least 32 bytes (or ERRAND_SYSTEM_SECRET)"))
	}
	if c.AuditAnchorEvery == "" {
		c.AuditAnchorEvery = "10m"
	}
	if c.DPoP.NonceEvery != 0 && c.DPoP.NonceEvery < time.Second {
		bad(errors.New("config: dpop.nonce_every: a duration of at least 1s, such as 5m"))
	}
	if c.AuditAnchorEvery != "off" {
		if d, err := time.ParseDuration(c.AuditAnchorEvery); err != nil || d < time.Second {
			bad(errors.New(`config: audit_anchor_every: a duration of at least 1s, such as 10m, or "off"`))
		}
	}
	if c.Limits.TokenTTLMax == 0 {
		c.Limits.TokenTTLMax = broker.DefaultTokenTTLMax
	}
	if c.Limits.TaskTTLMax == 0 {
		c.Limits.TaskTTLMax = broker.DefaultTaskTTLMax
	}
	c.fillDefaults()
	if c.Limits.TokenTTLMax < time.Second || c.Limits.TaskTTLMax < time.Second {
		bad(errors.New("config: limits: token_ttl_max and task_ttl_max must be at least 1s"))
	} else if c.Limits.TokenTTLMax > c.Limits.TaskTTLMax {
		bad(errors.New("config: limits.token_ttl_max: longer than task_ttl_max"))
	}
	bad(c.validateKeys())
	if c.SigningAlg == "" {
		c.SigningAlg = "EdDSA"
	}
	if c.SigningAlg != "EdDSA" && c.SigningAlg != "ES256" {
		bad(errors.New("config: signing_alg: must be EdDSA or ES256"))
	}
	for i := range c.Issuers {
		if is := &c.Issuers[i]; is.SPIFFE != nil && is.URL == "" {
			is.URL = identity.SPIFFEIssuerURL(is.SPIFFE.TrustDomain)
		}
	}
	if len(c.Issuers) == 0 {
		bad(errors.New("config: issuers: at least one issuer is required"))
	} else if _, err := identity.New(c.IdentityConfig()); err != nil {
		bad(fmt.Errorf("config: %w", err))
	}
	if c.PolicySchema != "" && len(c.Policies) == 0 {
		bad(errors.New("config: policy_schema: set, but no policies to validate"))
	}
	engineErr := c.validatePolicyEngine()
	bad(engineErr)
	cat, err := c.Catalog()
	if err != nil {
		bad(fmt.Errorf("config: %w", err))
	} else {
		if len(c.Policies) > 0 && engineErr == nil {
			// Validated here so that a bad policy stops start-up (and
			// config check) with its file and line.
			set, err := c.PolicySource().Load()
			if err == nil {
				err = c.PolicyCheck(cat)(set)
			}
			if err != nil {
				bad(fmt.Errorf("config: %w", err))
			}
		}
		if c.Vault != nil {
			bad(c.validateVault(cat))
		}
		bad(c.validateIDJAG(cat))
	}
	bad(c.validateNotifications())
	bad(c.validateSignin())
	return errors.Join(errs...)
}

// fillDefaults writes out the defaults that the server would apply to a
// zero value, so that the effective configuration shows what runs.
func (c *Config) fillDefaults() {
	if c.PolicyEngine == "" && len(c.Policies) > 0 {
		c.PolicyEngine = policy.EngineCedar
	}
	if c.PolicyEngine == policy.EngineOPA && len(c.Policies) > 0 && c.PolicyTimeout == 0 {
		c.PolicyTimeout = Duration(policy.DefaultTimeout)
	}
	l := &c.Limits
	if l.PendingTasksPerAgent == 0 {
		l.PendingTasksPerAgent = broker.DefaultMaxPendingPerAgent
	}
	if l.PrincipalRPS == 0 {
		l.PrincipalRPS = defaultPrincipalRPS
	}
	if l.AddressRPS == 0 && !l.AddressOff {
		l.AddressRPS = defaultAddressRPS
	}
	if l.StepUpTTL == 0 {
		l.StepUpTTL = broker.DefaultStepUpTTL
	}
	if l.StreamsPerPrincipal == 0 {
		l.StreamsPerPrincipal = defaultStreamsPerPrincipal
	}
	if l.StreamsPerReplica == 0 {
		l.StreamsPerReplica = defaultStreamsPerReplica
	}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		if len(is.Algorithms) == 0 {
			is.Algorithms = slices.Clone(identity.DefaultAlgorithms)
		}
		if is.MaxTokenLifetime == 0 {
			is.MaxTokenLifetime = Duration(defaultMaxTokenLifetime)
		}
	}
}

// minRotateEvery keeps a next key published long enough before it signs
// for every cached JWKS to have it.
const minRotateEvery = 10 * time.Minute

func (c *Config) validateKeys() error {
	ttl := c.Limits.TokenTTLMax
	if ttl == 0 {
		ttl = broker.DefaultTokenTTLMax
	}
	minOverlap := jwt.MinOverlap(ttl)
	if c.Keys.RotateEvery == "" {
		c.Keys.RotateEvery = "24h"
	}
	if c.Keys.RotateEvery != "off" {
		if d, err := time.ParseDuration(c.Keys.RotateEvery); err != nil || d < minRotateEvery {
			return fmt.Errorf(`config: keys.rotate_every: a duration of at least %s, such as 24h, or "off"`, minRotateEvery)
		}
	}
	if c.Keys.Overlap == "" {
		c.Keys.Overlap = max(time.Hour, minOverlap).String()
	}
	if d, err := time.ParseDuration(c.Keys.Overlap); err != nil || d < minOverlap {
		return fmt.Errorf("config: keys.overlap: a duration of at least %s (token_ttl_max + JWKS cache time %s + leeway %s), so no token in use meets an unknown or retired key",
			minOverlap, jwt.JWKSMaxAge, jwt.Leeway)
	}
	return nil
}

// KeyPolicy is the signing keys' rotation policy.
func (c *Config) KeyPolicy() jwt.KeyPolicy {
	var p jwt.KeyPolicy
	if c.Keys.RotateEvery != "off" {
		p.RotateEvery, _ = time.ParseDuration(c.Keys.RotateEvery)
	}
	p.Overlap, _ = time.ParseDuration(c.Keys.Overlap)
	return p
}

// PolicyCheck vets a loaded policy set against the config, at start and
// at every reload: its actions are in the catalog, its groups are named
// as policies are shown them (issuer-qualified with several user
// issuers), and its resources are in lower case when an audience compares
// them case-insensitively.
func (c *Config) PolicyCheck(cat *broker.Catalog) func(policy.Set) error {
	known, users := KnownAction(cat), c.UserIssuers()
	lower := false
	for _, a := range c.Audiences {
		lower = lower || a.CaseInsensitive
	}
	return func(s policy.Set) error {
		if err := s.CheckActions(known); err != nil {
			return err
		}
		if err := s.CheckGroups(users); err != nil {
			return err
		}
		if lower {
			return s.CheckLowerCaseResources()
		}
		return nil
	}
}

// KnownAction reports whether a policy's action is in the catalog.
func KnownAction(cat *broker.Catalog) func(string) bool {
	return func(a string) bool { _, ok := cat.Action(a); return ok }
}

// path resolves p against the config file's directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// PolicyFiles are the policy patterns and the schema, resolved against the
// config file's directory.
func (c *Config) PolicyFiles() ([]string, string) {
	pats := make([]string, len(c.Policies))
	for i, p := range c.Policies {
		pats[i] = c.path(p)
	}
	return pats, c.path(c.PolicySchema)
}

// PolicySource is what policy.Engine loads: the engine, and the files
// resolved against the config file's directory.
func (c *Config) PolicySource() policy.Source {
	pats, schema := c.PolicyFiles()
	return policy.Source{Engine: c.PolicyEngine, Patterns: pats, Schema: schema,
		Data: c.path(c.PolicyData), Timeout: time.Duration(c.PolicyTimeout)}
}

// validatePolicyEngine refuses an unknown engine, and the keys of one
// engine set with the other.
func (c *Config) validatePolicyEngine() error {
	switch c.PolicyEngine {
	case "", policy.EngineCedar:
		if c.PolicyData != "" {
			return errors.New("config: policy_data: Rego data, but policy_engine is cedar")
		}
		if c.PolicyTimeout != 0 {
			return errors.New("config: policy_timeout: a Rego decision's budget, but policy_engine is cedar")
		}
	case policy.EngineOPA:
		if c.PolicySchema != "" {
			return errors.New("config: policy_schema: a Cedar schema, but policy_engine is opa")
		}
		if (c.PolicyData != "" || c.PolicyTimeout != 0) && len(c.Policies) == 0 {
			return errors.New("config: policy_data, policy_timeout: set, but no policies")
		}
	default:
		return fmt.Errorf("config: policy_engine: cedar or opa, not %q", c.PolicyEngine)
	}
	return nil
}

func (c *Config) validateVault(cat *broker.Catalog) error {
	v := c.Vault
	if v.ReconcileInterval != 0 && v.ReconcileInterval < time.Second {
		return errors.New("config: vault.reconcile_interval: at least 1s (default 1m)")
	}
	if u, err := url.Parse(v.Address); v.Address == "" || err != nil || u.Host == "" {
		return errors.New("config: vault.address: must be an absolute URL")
	}
	switch v.Auth.Method {
	case "token":
		if v.Auth.TokenFile == "" {
			return errors.New("config: vault.auth.token_file: required with method token")
		}
	case "approle":
		if v.Auth.RoleID == "" || v.Auth.SecretIDFile == "" {
			return errors.New("config: vault.auth: role_id and secret_id_file are required with method approle")
		}
	default:
		return errors.New("config: vault.auth.method: token or approle")
	}
	names := map[string]bool{}
	for i, r := range c.SecretRoles() {
		if err := vault.CheckPath(r.Path); err != nil {
			return fmt.Errorf("config: vault.roles[%d].path: %v", i, err)
		}
		if names[r.Name] {
			return fmt.Errorf("config: vault.roles[%d].name: %q is used twice", i, r.Name)
		}
		names[r.Name] = true
		sc, err := r.Scope()
		if err != nil {
			return fmt.Errorf("config: vault.roles[%d]: %v", i, err)
		}
		if _, ok := cat.Action(sc.Action); !ok {
			return fmt.Errorf("config: vault.roles[%d].action: %q is not in actions", i, r.Action)
		}
		if err := cat.CheckGrantable(broker.Scopes{sc}); err != nil {
			return fmt.Errorf("config: vault.roles[%d].action: %v", i, err)
		}
	}
	return nil
}

// SecretRoles are the configured Vault roles, with default names.
func (c *Config) SecretRoles() []broker.SecretRole {
	if c.Vault == nil {
		return nil
	}
	out := make([]broker.SecretRole, len(c.Vault.Roles))
	for i, r := range c.Vault.Roles {
		name := r.Name
		if name == "" {
			name = r.Path[strings.LastIndex(r.Path, "/")+1:]
		}
		out[i] = broker.SecretRole{Name: name, Action: r.Action, Path: r.Path}
	}
	return out
}

// IdentityConfig is the identity.Config of the configured issuers.
func (c *Config) IdentityConfig() identity.Config {
	out := identity.Config{Self: c.PublicURL}
	for _, is := range c.Issuers {
		id := identity.Issuer{
			URL: is.URL, Audience: is.Audience, Kind: broker.Kind(is.Kind),
			GroupsClaim: is.GroupsClaim, AuditorGroup: is.AuditorGroup, AdminGroup: is.AdminGroup,
			Algorithms: is.Algorithms, MaxLifetime: time.Duration(is.MaxTokenLifetime), Subjects: is.Subjects,
		}
		if s := is.SPIFFE; s != nil {
			b := s.Bundle
			id.SPIFFE = &identity.SPIFFE{TrustDomain: s.TrustDomain,
				EndpointURL: b.EndpointURL, EndpointSPIFFEID: b.EndpointSPIFFEID,
				BootstrapFile: c.path(b.BootstrapFile), EndpointCAFile: c.path(b.CAFile),
				OIDCDiscoveryURL: b.OIDCDiscoveryURL, File: c.path(b.File), WorkloadAPISocket: c.path(b.WorkloadAPISocket),
				X509SVID: s.X509SVID}
		}
		out.Issuers = append(out.Issuers, id)
	}
	return out
}

// UserIssuers lists the URLs of issuers of kind user.
func (c *Config) UserIssuers() []string { return c.issuersOf(broker.KindUser) }

// AgentIssuers lists the URLs of issuers of kind agent.
func (c *Config) AgentIssuers() []string { return c.issuersOf(broker.KindAgent) }

func (c *Config) issuersOf(k broker.Kind) []string {
	var out []string
	for _, is := range c.Issuers {
		if is.Kind == string(k) {
			out = append(out, is.URL)
		}
	}
	return out
}

// Catalog builds the broker's catalog from actions, audiences and grants.
func (c *Config) Catalog() (*broker.Catalog, error) {
	actions := make([]broker.Action, len(c.Actions))
	for i, a := range c.Actions {
		actions[i] = broker.Action{Name: a.Name, Class: broker.Class(a.Class), Risk: broker.Risk(a.Risk), Description: a.Description}
	}
	auds := make([]broker.Audience, len(c.Audiences))
	known := map[string]bool{}
	for i, a := range c.Audiences {
		auds[i] = broker.Audience{URL: a.URL, Environment: a.Environment, CaseInsensitive: a.CaseInsensitive,
			AnyIntrospector: a.AnyIntrospector}
		if a.AnyIntrospector && len(a.Introspectors) > 0 {
			return nil, fmt.Errorf("audiences[%d]: any_introspector and introspectors exclude each other", i)
		}
		known[a.URL] = true
		for j, ref := range a.Introspectors {
			if r, ok := broker.SPIFFERef(ref); ok {
				auds[i].Introspectors = append(auds[i].Introspectors, r)
				continue
			}
			iss, sub, ok := strings.Cut(ref, "#")
			if !ok || iss == "" || sub == "" {
				return nil, fmt.Errorf("audiences[%d].introspectors[%d]: write <issuer URL>#<sub>", i, j)
			}
			auds[i].Introspectors = append(auds[i].Introspectors, broker.Ref{Issuer: iss, Subject: sub})
		}
	}
	users := c.UserIssuers()
	grants := make([]broker.Grant, len(c.Grants))
	for i, g := range c.Grants {
		scopes, err := broker.ParseScopes(g.Scopes)
		if err != nil {
			return nil, fmt.Errorf("grants[%d].scopes: %v", i, err)
		}
		for j, a := range g.Audiences {
			if !known[a] {
				return nil, fmt.Errorf("grants[%d].audiences[%d]: audience %q is not in audiences", i, j, a)
			}
		}
		iss, err := grantIssuer(g.Issuer, users)
		if err != nil {
			return nil, fmt.Errorf("grants[%d].issuer: %v", i, err)
		}
		// A grant for a case-insensitive audience is compared with scopes
		// kept in lower case: an upper-case letter in it could never match.
		for _, a := range c.Audiences {
			if !a.CaseInsensitive || (g.Audiences != nil && !slices.Contains(g.Audiences, a.URL)) {
				continue
			}
			for _, sc := range scopes {
				if sc.Lower().String() != sc.String() {
					return nil, fmt.Errorf("grants[%d].scopes: %q has upper-case letters, but audience %s is case_insensitive (its resources are kept in lower case): write it in lower case", i, sc, a.URL)
				}
			}
		}
		grants[i] = broker.Grant{Issuer: iss, Group: g.Group, Scopes: scopes, Audiences: g.Audiences}
	}
	cat, err := broker.NewCatalog(actions, auds, grants, c.DenyActions)
	if err != nil {
		// Name the file line of a bad catalog entry.
		msg := actionRef.ReplaceAllStringFunc(err.Error(), func(m string) string {
			var i int
			if _, e := fmt.Sscanf(m, "actions[%d]", &i); e == nil && i < len(c.Actions) && c.Actions[i].line > 0 {
				return fmt.Sprintf("%s (line %d)", m, c.Actions[i].line)
			}
			return m
		})
		return nil, errors.New(msg)
	}
	return cat, nil
}

// grantIssuer is the user issuer a grant names: one of users (written as
// configured, give or take a trailing slash), or, when the grant names
// none, the only one. A group name is the issuer's: with several user
// issuers, an issuer-less grant would give corp's grant to partner's
// namesake group.
func grantIssuer(iss string, users []string) (string, error) {
	if iss == "" {
		switch len(users) {
		case 0:
			return "", nil
		case 1:
			return users[0], nil
		}
		return "", fmt.Errorf("required: %d user issuers are configured (%s), and a group name means something only at the issuer that asserts it", len(users), strings.Join(users, ", "))
	}
	for _, u := range users {
		if identity.SameURL(iss, u) {
			return u, nil
		}
	}
	return "", fmt.Errorf("%q is not a configured issuer of kind user", iss)
}

// AnchorInterval is the audit anchoring period, 0 when off.
func (c *Config) AnchorInterval() time.Duration {
	d, err := time.ParseDuration(c.AuditAnchorEvery)
	if err != nil {
		return 0
	}
	return d
}
