package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestR08UnsetVariableIsAnErrorNamingIt: with system_secret set, another
// unset variable used to become "" silently (auditor_group: "",
// introspectors failing open); now it is an error naming the variable,
// the key and the line, and ${VAR:-default} is the way to mean a default.
func TestR08UnsetVariableIsAnErrorNamingIt(t *testing.T) {
	for _, tt := range []struct{ name, old, new, want string }{
		{"a scalar", "auditor_group: security-auditors", "auditor_group: ${AUDITORS}", "issuers[1].auditor_group (line 13): environment variable AUDITORS"},
		{"inside a value", "url: https://login.example.com", "url: https://${IDP_HOST}/", "issuers[1].url (line 9): environment variable IDP_HOST"},
		{"a list", `scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]`, `scopes: ["${SCOPE}"]`, "grants[0].scopes[0]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := strings.Replace(valid, tt.old, tt.new, 1)
			if raw == valid {
				t.Fatal("test bug: nothing replaced")
			}
			_, err := Parse([]byte(raw), goodEnv)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestR08DefaultsAndTypedValues(t *testing.T) {
	raw := strings.Replace(valid, "auditor_group: security-auditors", "auditor_group: ${AUDITORS:-sec-audit}", 1)
	raw = strings.Replace(raw, "limits: {token_ttl_max: 5m, task_ttl_max: 8h}",
		"limits: {token_ttl_max: 5m, task_ttl_max: 8h, pending_tasks_per_agent: \"${PENDING}\"}", 1)
	// A plain value that is one reference is typed by what it holds.
	raw = strings.Replace(raw, "  - https://staging-api.example.com",
		"  - url: https://staging-api.example.com\n    case_insensitive: ${FOLD}", 1)
	raw = strings.Replace(raw, "listen: 127.0.0.1:8080", "listen: 127.0.0.1:8080  # ${NOT_EXPANDED_IN_COMMENTS}", 1)
	c, err := Parse([]byte(raw), env(map[string]string{"ERRAND_SYSTEM_SECRET": strings.Repeat("s", 32), "PENDING": "7", "FOLD": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuers[1].AuditorGroup != "sec-audit" || c.Limits.PendingTasksPerAgent != 7 || !c.Audiences[1].CaseInsensitive {
		t.Fatalf("auditor_group %q, pending %d, case_insensitive %v", c.Issuers[1].AuditorGroup, c.Limits.PendingTasksPerAgent, c.Audiences[1].CaseInsensitive)
	}
}

// TestR08ValueCannotInjectYAML: expansion happens on scalar values after
// parsing, so a variable's value is one string whatever it holds.
func TestR08ValueCannotInjectYAML(t *testing.T) {
	raw := strings.Replace(valid, "auditor_group: security-auditors", "auditor_group: ${AUDITORS}", 1)
	evil := "x\n    admin_group: everyone"
	c, err := Parse([]byte(raw), env(map[string]string{"ERRAND_SYSTEM_SECRET": strings.Repeat("s", 32), "AUDITORS": evil}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuers[1].AuditorGroup != evil || c.Issuers[1].AdminGroup != "errand-admins" {
		t.Fatalf("auditor_group %q, admin_group %q: the value was read as YAML", c.Issuers[1].AuditorGroup, c.Issuers[1].AdminGroup)
	}
	// A value that would close a flow list and add an entry stays one.
	raw = strings.Replace(valid, `scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]`, `scopes: ["${SCOPE}"]`, 1)
	c, err = Parse([]byte(raw), env(map[string]string{"ERRAND_SYSTEM_SECRET": strings.Repeat("s", 32),
		"SCOPE": `github.repo.read:acme/**", "github.pr.write:**`}))
	if err == nil && len(c.Grants[0].Scopes) != 1 {
		t.Fatalf("grants[0].scopes = %q: the value added an entry", c.Grants[0].Scopes)
	}
}

// TestR08LoadCatalogNeedsOnlyTheCatalogsVariables: policy tests in CI
// have no secrets; what the catalog is made of must still be set.
func TestR08LoadCatalogNeedsOnlyTheCatalogsVariables(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "errand.yaml")
	t.Setenv("ERRAND_SYSTEM_SECRET", "")
	if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCatalog(path); err != nil {
		t.Fatalf("catalog with system_secret unset: %v", err)
	}
	raw := strings.Replace(valid, `"github.pr.write:acme/**"]`, `"${EXTRA_SCOPE}"]`, 1)
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCatalog(path); err == nil || !strings.Contains(err.Error(), "EXTRA_SCOPE") {
		t.Fatalf("catalog with a grant's variable unset: %v", err)
	}
}

// TestUnknownKeysAtEveryDepth: keys of mappings decoded by custom
// unmarshalers (an audience, an action) are checked too.
func TestUnknownKeysAtEveryDepth(t *testing.T) {
	for _, tt := range []struct{ old, new, key string }{
		{`{url: "https://api.github.com", environment: prod}`, `{url: "https://api.github.com", enviroment: prod}`, "audiences[0].enviroment"},
		{"{name: github.repo.read, class: read, risk: low}", "{name: github.repo.read, class: read, risk: low, claass: admin}", "actions[0].claass"},
	} {
		_, err := Parse([]byte(strings.Replace(valid, tt.old, tt.new, 1)), goodEnv)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Fatalf("err = %v, want it to name %s", err, tt.key)
		}
	}
}

// TestR01TrustedProxiesAndAddressLimiterOff reads trusted_proxies (CIDRs
// or addresses) and address_rps: off.
func TestR01TrustedProxiesAndAddressLimiterOff(t *testing.T) {
	raw := strings.Replace(valid, "limits: {token_ttl_max: 5m, task_ttl_max: 8h}",
		"trusted_proxies: [10.0.0.0/8, 192.0.2.1, \"::1\"]\nlimits: {token_ttl_max: 5m, task_ttl_max: 8h, address_rps: off}", 1)
	c, err := Parse([]byte(raw), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.Proxies()
	if err != nil || len(ps) != 3 || ps[1].String() != "192.0.2.1/32" || ps[2].String() != "::1/128" || !c.Limits.AddressOff {
		t.Fatalf("proxies %v (%v), address off %v", ps, err, c.Limits.AddressOff)
	}
	bad := strings.Replace(raw, "192.0.2.1", "not-a-proxy", 1)
	if _, err := Parse([]byte(bad), goodEnv); err == nil || !strings.Contains(err.Error(), "trusted_proxies[1]") {
		t.Fatalf("bad proxy: %v", err)
	}
}
