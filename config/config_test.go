package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandhq/errand/broker"
)

const valid = `
listen: 127.0.0.1:8080
public_url: https://errand.example.com
database_url: postgres://errand@db/errand
issuers:
  - url: https://token.actions.githubusercontent.com
    audience: errand
    kind: agent
  - url: https://login.example.com
    audience: errand
    kind: user
    groups_claim: groups
    auditor_group: security-auditors
    admin_group: errand-admins
  - url: https://oidc.eks.example.com/id/CLUSTER
    audience: errand
    kind: resource
grants:
  - group: engineers
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
audiences:
  - {url: "https://api.github.com", environment: prod}
  - https://staging-api.example.com
limits: {token_ttl_max: 5m, task_ttl_max: 8h}
system_secret: ${ERRAND_SYSTEM_SECRET}
`

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var goodEnv = env(map[string]string{"ERRAND_SYSTEM_SECRET": strings.Repeat("s", 32)})

func TestDesignSketchLoads(t *testing.T) {
	c, err := Parse([]byte(valid), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.TokenTTLMax.Minutes() != 5 || c.Limits.TaskTTLMax.Hours() != 8 || len(c.Audiences) != 2 ||
		c.Audiences[1].URL != "https://staging-api.example.com" || c.Audiences[0].Environment != "prod" {
		t.Fatalf("parsed: %+v", c)
	}
	if u := c.UserIssuers(); len(u) != 1 || u[0] != "https://login.example.com" {
		t.Fatalf("user issuers: %v", u)
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cat.Action("github.pr.write"); !ok {
		t.Fatal("catalog lacks github.pr.write")
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	c, err := Parse([]byte(valid), env(map[string]string{
		"ERRAND_SYSTEM_SECRET": strings.Repeat("x", 40), "ERRAND_DATABASE_URL": "postgres://other/db",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.SystemSecret != strings.Repeat("x", 40) || c.DatabaseURL != "postgres://other/db" {
		t.Fatalf("overrides not applied: %q %q", c.SystemSecret, c.DatabaseURL)
	}
}

// TestInvalidConfigsNameTheKey: each mistake stops start-up with one line
// that names the offending key.
func TestInvalidConfigsNameTheKey(t *testing.T) {
	tests := []struct {
		name, old, new, key string
		env                 func(string) string
	}{
		{"unknown top-level key", "listen:", "lisen: x\nlisten:", "lisen", nil},
		{"unknown nested key", "kind: agent", "kind: agent\n    audiance: x", "audiance", nil},
		{"issuer equal to public_url", "https://token.actions.githubusercontent.com", "https://errand.example.com", "issuers[0]", nil},
		{"issuer equal to public_url with a trailing slash", "https://token.actions.githubusercontent.com", "https://errand.example.com/", "issuers[0]", nil},
		{"missing system_secret", "", "", "system_secret", env(nil)},
		{"short system_secret", "", "", "system_secret", env(map[string]string{"ERRAND_SYSTEM_SECRET": "short"})},
		{"grant of an action absent from the catalog", `"github.pr.write:acme/**"]`, `"github.pr.merge:acme/**"]`, "grants[0]", nil},
		{"grant of an audience absent from the catalog", `scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]`,
			`scopes: ["github.repo.read:acme/**"]` + "\n    audiences: [https://evil.example]", "grants[0].audiences", nil},
		{"unknown kind", "kind: resource", "kind: robot", "issuers[2]", nil},
		{"symmetric algorithm", "kind: agent", "kind: agent\n    algorithms: [HS256]", "issuers[0]", nil},
		{"bad action class", "class: write", "class: writer", "actions[1]", nil},
		{"deny-listed action with a harmless class", "{name: github.pr.write, class: write, risk: medium}",
			"{name: github.pr.write, class: write, risk: medium}\n  - {name: aws.iam.createuser, class: write, risk: low}", "actions[2] (line 24)", nil},
		{"sub-word deny-listed action with a harmless class", "{name: github.pr.write, class: write, risk: medium}",
			"{name: github.pr.write, class: write, risk: medium}\n  - {name: okta.user.resetpassword, class: write, risk: low}", "actions[2] (line 24)", nil},
		{"bad scope in a grant", `"github.repo.read:acme/**"`, `"github.repo.read:acme//x"`, "grants[0].scopes", nil},
		{"missing public_url", "public_url: https://errand.example.com", "", "public_url", nil},
		{"missing database_url", "database_url: postgres://errand@db/errand", "", "database_url", nil},
		{"token ttl longer than task ttl", "token_ttl_max: 5m", "token_ttl_max: 9h", "limits.token_ttl_max", nil},
		{"duration without unit", "task_ttl_max: 8h", "task_ttl_max: eight", "task_ttl_max", nil},
		{"bad signing alg", "limits:", "signing_alg: RS256\nlimits:", "signing_alg", nil},
		{"dpop nonce period under a second", "limits:", "dpop: {nonce_every: 10ms}\nlimits:", "dpop.nonce_every", nil},
		{"any_introspector beside introspectors", `{url: "https://api.github.com", environment: prod}`,
			`{url: "https://api.github.com", environment: prod, any_introspector: true, introspectors: ["https://oidc.eks.example.com/id/CLUSTER#gw"]}`,
			"audiences[0]", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := valid
			if tt.old != "" {
				if !strings.Contains(raw, tt.old) {
					t.Fatalf("test bug: %q not in the config", tt.old)
				}
				raw = strings.Replace(raw, tt.old, tt.new, 1)
			}
			e := tt.env
			if e == nil {
				e = goodEnv
			}
			_, err := Parse([]byte(raw), e)
			if err == nil {
				t.Fatal("config accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.key) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q does not name %q on one line", msg, tt.key)
			}
		})
	}
}

const vaultBlock = `
vault:
  address: http://127.0.0.1:8200
  auth: {method: token, token_file: /run/errand/vault-token}
  roles:
    - {action: db.orders.read, path: database/creds/orders-readonly}
`

func TestVaultConfig(t *testing.T) {
	base := strings.Replace(valid, "  - {name: github.pr.write, class: write, risk: medium}",
		"  - {name: github.pr.write, class: write, risk: medium}\n  - {name: db.orders.read, class: read, risk: medium}", 1)
	c, err := Parse([]byte(base+vaultBlock), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.SecretRoles(); len(r) != 1 || r[0].Name != "orders-readonly" || r[0].Path != "database/creds/orders-readonly" {
		t.Fatalf("roles: %+v", r)
	}
	bad := []struct{ name, old, new, key string }{
		{"path under sys/", "database/creds/orders-readonly", "sys/policy/root", "vault.roles[0].path"},
		{"path under auth/", "database/creds/orders-readonly", "auth/token/create", "vault.roles[0].path"},
		{"path under identity/", "database/creds/orders-readonly", "identity/entity", "vault.roles[0].path"},
		{"path escaping with ..", "database/creds/orders-readonly", "database/../sys/policy", "vault.roles[0].path"},
		{"glob path", "database/creds/orders-readonly", "database/creds/*", "vault.roles[0].path"},
		{"unknown action", "action: db.orders.read", "action: db.orders.drop", "vault.roles[0].action"},
		{"no token file", "token_file: /run/errand/vault-token", "token_file: ''", "vault.auth.token_file"},
		{"unknown auth method", "method: token", "method: userpass", "vault.auth.method"},
		{"no address", "address: http://127.0.0.1:8200", "address: ''", "vault.address"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := Parse([]byte(base+strings.Replace(vaultBlock, b.old, b.new, 1)), goodEnv)
			if err == nil || !strings.Contains(err.Error(), b.key) {
				t.Fatalf("err = %v, want one naming %s", err, b.key)
			}
		})
	}
	cred := strings.Replace(base, "{name: db.orders.read, class: read, risk: medium}", "{name: db.orders.read, class: credential, risk: high}", 1)
	if _, err := Parse([]byte(cred+vaultBlock), goodEnv); err == nil || !strings.Contains(err.Error(), "vault.roles[0].action") {
		t.Fatalf("a credential-class Vault role was accepted: %v", err)
	}
}

// twoUserIssuers is the valid config with a second user issuer, a
// partner's, whose users also assert groups.
var twoUserIssuers = strings.Replace(valid, "  - url: https://oidc.eks.example.com/id/CLUSTER", `  - url: https://login.partner.example
    audience: errand
    kind: user
    groups_claim: groups
  - url: https://oidc.eks.example.com/id/CLUSTER`, 1)

// TestH04GrantWithoutIssuerIsRefusedWithTwoUserIssuers: a group name means
// something only at the issuer that asserts it. With two user issuers a
// grant must say whose group it is, or partner "eng" would receive corp
// "eng"'s grant; with one, a grant without issuer is that issuer's.
func TestH04GrantWithoutIssuerIsRefusedWithTwoUserIssuers(t *testing.T) {
	_, err := Parse([]byte(twoUserIssuers), goodEnv)
	if err == nil || !strings.Contains(err.Error(), "grants[0].issuer: required") {
		t.Fatalf("an issuer-less grant with two user issuers: %v", err)
	}

	corp := strings.Replace(twoUserIssuers, "  - group: engineers", "  - issuer: https://login.example.com/\n    group: engineers", 1)
	c, err := Parse([]byte(corp), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	user := func(iss string) broker.Principal {
		return broker.Principal{Issuer: iss, Subject: "alice", Kind: broker.KindUser, Groups: []string{"engineers"}}
	}
	if len(cat.GrantsFor(user("https://login.example.com"))) != 2 {
		t.Fatal("corp's engineers lost their grant")
	}
	if g := cat.GrantsFor(user("https://login.partner.example")); len(g) != 0 {
		t.Fatalf("partner's engineers received corp's grant: %v", g)
	}
	sc := broker.MustParseScope("github.repo.read:acme/api")
	if cat.Granted(user("https://login.partner.example"), sc, "https://api.github.com") {
		t.Fatal("Granted: partner's engineers hold corp's grant")
	}

	unknown := strings.Replace(twoUserIssuers, "  - group: engineers", "  - issuer: https://token.actions.githubusercontent.com\n    group: engineers", 1)
	if _, err := Parse([]byte(unknown), goodEnv); err == nil || !strings.Contains(err.Error(), "grants[0].issuer") ||
		!strings.Contains(err.Error(), "not a configured issuer of kind user") {
		t.Fatalf("a grant naming an agent issuer: %v", err)
	}

	// One user issuer: the grant is that issuer's, and no other's.
	one, err := Parse([]byte(valid), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	cat, err = one.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.GrantsFor(user("https://login.example.com"))) != 2 || len(cat.GrantsFor(user("https://login.partner.example"))) != 0 {
		t.Fatal("with one user issuer, an issuer-less grant is not exactly that issuer's")
	}
}

// TestH04PolicyNamingABareGroupIsRefusedWithTwoUserIssuers: with two user
// issuers policies see groups as Group::"<issuer>#<name>", so a rule on a
// bare Group::"payments" would never match — silently, and a forbid on it
// would never forbid. Start-up refuses it, and a group of an issuer that
// is not a user issuer, naming the file and line.
func TestH04PolicyNamingABareGroupIsRefusedWithTwoUserIssuers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withPolicy := func(base, file string) []byte {
		return []byte(strings.Replace(base, "limits:", "policies: [\""+file+"\"]\nlimits:", 1))
	}
	bare := write("bare.cedar", `@id("allow") permit (principal, action, resource);
@id("contractors-read-only")
forbid (principal, action == Action::"github.pr.write", resource)
when { context.user in Group::"contractors" };`)
	qualified := write("qualified.cedar", `@id("allow") permit (principal, action, resource);
@id("contractors-read-only")
forbid (principal, action == Action::"github.pr.write", resource)
when { context.user in Group::"https://login.partner.example#contractors" };`)
	foreign := write("foreign.cedar", `@id("allow") permit (principal, action, resource);
@id("contractors-read-only")
forbid (principal, action == Action::"github.pr.write", resource)
when { context.user in Group::"https://token.actions.githubusercontent.com#contractors" };`)
	corp := strings.Replace(twoUserIssuers, "  - group: engineers", "  - issuer: https://login.example.com\n    group: engineers", 1)

	_, err := Parse(withPolicy(corp, bare), goodEnv)
	if err == nil || !strings.Contains(err.Error(), `bare.cedar:2: policy "contractors-read-only" names Group::"contractors"`) {
		t.Fatalf("a bare group with two user issuers: %v", err)
	}
	if _, err := Parse(withPolicy(corp, qualified), goodEnv); err != nil {
		t.Fatalf("a qualified group: %v", err)
	}
	if _, err := Parse(withPolicy(corp, foreign), goodEnv); err == nil || !strings.Contains(err.Error(), "not a configured issuer of kind user") {
		t.Fatalf("a group of an agent issuer: %v", err)
	}
	// With one user issuer, both spellings name its group.
	own := write("own.cedar", `@id("allow") permit (principal, action, resource);
@id("contractors-read-only")
forbid (principal, action == Action::"github.pr.write", resource)
when { context.user in Group::"https://login.example.com#contractors" };`)
	for _, f := range []string{bare, own} {
		if _, err := Parse(withPolicy(valid, f), goodEnv); err != nil {
			t.Fatalf("one user issuer, %s: %v", filepath.Base(f), err)
		}
	}
}

// TestH06CaseInsensitiveAudienceWantsLowerCaseGrantsAndPolicies: at a
// case_insensitive audience scopes are kept in lower case, so a grant or
// a policy resource with an upper-case letter could never match — a
// forbid on Resource::"acme/Infra/**" would never forbid. Both are
// refused at start, naming the key or the file and line.
func TestH06CaseInsensitiveAudienceWantsLowerCaseGrantsAndPolicies(t *testing.T) {
	folded := strings.Replace(valid, `{url: "https://api.github.com", environment: prod}`,
		`{url: "https://api.github.com", environment: prod, case_insensitive: true}`, 1)
	c, err := Parse([]byte(folded), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	if !cat.CaseInsensitive("https://api.github.com") || cat.CaseInsensitive("https://staging-api.example.com") {
		t.Fatal("case_insensitive is not the audience's")
	}
	upper := strings.Replace(folded, `"github.pr.write:acme/**"]`, `"github.pr.write:Acme/**"]`, 1)
	if _, err := Parse([]byte(upper), goodEnv); err == nil || !strings.Contains(err.Error(), `grants[0].scopes: "github.pr.write:Acme/**" has upper-case letters`) {
		t.Fatalf("an upper-case grant for a case-insensitive audience: %v", err)
	}
	// A grant limited to case-sensitive audiences may name any case.
	staging := strings.Replace(upper, `"github.pr.write:Acme/**"]`, `"github.pr.write:Acme/**"]`+"\n    audiences: [https://staging-api.example.com]", 1)
	if _, err := Parse([]byte(staging), goodEnv); err != nil {
		t.Fatalf("an upper-case grant for a case-sensitive audience: %v", err)
	}

	p := filepath.Join(t.TempDir(), "p.cedar")
	if err := os.WriteFile(p, []byte(`@id("allow") permit (principal, action, resource);
@id("protect-infra") forbid (principal, action, resource) when { resource in Resource::"acme/Infra/**" };`), 0o600); err != nil {
		t.Fatal(err)
	}
	withPolicy := func(base string) []byte {
		return []byte(strings.Replace(base, "limits:", "policies: [\""+p+"\"]\nlimits:", 1))
	}
	if _, err := Parse(withPolicy(folded), goodEnv); err == nil || !strings.Contains(err.Error(), `p.cedar:2: policy "protect-infra" names Resource::"acme/Infra/**", with upper-case letters`) {
		t.Fatalf("an upper-case policy resource with a case-insensitive audience: %v", err)
	}
	if _, err := Parse(withPolicy(valid), goodEnv); err != nil {
		t.Fatalf("without a case-insensitive audience: %v", err)
	}
}

// A SPIFFE issuer: its url is spiffe://<trust_domain>, its bundle file is
// read relative to the config file, and its introspectors may be written
// as bare SPIFFE IDs; mistakes name the key.
func TestSPIFFEIssuer(t *testing.T) {
	spiffe := strings.Replace(valid, `  - url: https://oidc.eks.example.com/id/CLUSTER
    audience: errand
    kind: resource`, `  - audience: errand
    kind: agent
    subjects: ["spiffe://prod.example.org/ns/agents/**"]
    spiffe:
      trust_domain: prod.example.org
      bundle: {file: bundle.json}`, 1)
	spiffe = strings.Replace(spiffe, `  - https://staging-api.example.com`, `  - {url: "https://staging-api.example.com", introspectors: ["spiffe://prod.example.org/rs/ledger"]}`, 1)
	c, err := Parse([]byte(spiffe), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.AgentIssuers(); len(a) != 2 || a[1] != "spiffe://prod.example.org" {
		t.Fatalf("agent issuers: %v", a)
	}
	if c.AcceptsX509SVIDs() {
		t.Fatal("X.509-SVIDs accepted without x509_svid")
	}
	if x, err := Parse([]byte(strings.Replace(spiffe, "trust_domain: prod.example.org", "trust_domain: prod.example.org\n      x509_svid: true", 1)), goodEnv); err != nil ||
		!x.AcceptsX509SVIDs() || !x.IdentityConfig().Issuers[2].SPIFFE.X509SVID {
		t.Fatalf("x509_svid: true: %v", err)
	}
	ic := c.IdentityConfig()
	s := ic.Issuers[2].SPIFFE
	if s == nil || s.TrustDomain != "prod.example.org" || s.File != "bundle.json" || ic.Issuers[2].URL != "spiffe://prod.example.org" {
		t.Fatalf("identity config: %+v", ic.Issuers[2])
	}
	cat, err := c.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := cat.Audience("https://staging-api.example.com"); len(a.Introspectors) != 1 ||
		a.Introspectors[0] != (broker.Ref{Issuer: "spiffe://prod.example.org", Subject: "spiffe://prod.example.org/rs/ledger"}) {
		t.Fatalf("introspectors: %+v", a.Introspectors)
	}
	for bad, want := range map[string]string{
		"bundle: {file: bundle.json}":                     "", // control
		"bundle: {file: b.json, workload_api_socket: /s}": "issuers[2]",
		"bundle: {}":              "issuers[2]",
		"bundle: {files: b.json}": "issuers[2].spiffe.bundle",
		"bundle: {endpoint_url: http://spire.example:8443}":                                                              "issuers[2]",
		"bundle: {endpoint_url: https://spire.example:8443, endpoint_spiffe_id: spiffe://prod.example.org/spire/server}": "issuers[2]",
	} {
		raw := strings.Replace(spiffe, "bundle: {file: bundle.json}", bad, 1)
		_, err := Parse([]byte(raw), goodEnv)
		if want == "" {
			if err != nil {
				t.Fatalf("%s: %v", bad, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %s", bad, err, want)
		}
	}
	raw := strings.Replace(spiffe, "spiffe://prod.example.org/ns/agents/**", "spiffe://dev.example.org/**", 1)
	if _, err := Parse([]byte(raw), goodEnv); err == nil || !strings.Contains(err.Error(), "issuers[2].subjects") {
		t.Errorf("a subject of another trust domain: %v", err)
	}
}
