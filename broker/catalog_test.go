package broker

import (
	"strings"
	"testing"
)

func testCatalog(t *testing.T) *Catalog {
	t.Helper()
	c, err := NewCatalog(
		[]Action{
			{Name: "github.repo.read", Class: ClassRead, Risk: RiskLow},
			{Name: "github.pr.write", Class: ClassWrite, Risk: RiskMedium},
			{Name: "aws.iam.createaccesskey", Class: ClassCredential, Risk: RiskHigh},
			{Name: "okta.user.update", Class: ClassIdentity, Risk: RiskHigh},
			{Name: "errand.token.mint", Class: ClassToken, Risk: RiskHigh},
			{Name: "ci.deploy", Class: ClassAdmin, Risk: RiskHigh},
		},
		[]Audience{{URL: "https://api.github.com"}},
		[]Grant{{Group: "eng", Scopes: Scopes{MustParseScope("github.repo.read:acme/**")}}},
		[]string{"ci.deploy"},
	)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckGrantableBlocksCredentialIdentityTokenAndDenyList(t *testing.T) {
	c := testCatalog(t)
	tests := []struct {
		name, scope, code string
	}{
		{"read is grantable", "github.repo.read:acme/api", ""},
		{"credential class", "aws.iam.createaccesskey", "blocked_action"},
		{"identity class", "okta.user.update:alice", "blocked_action"},
		{"token class", "errand.token.mint", "blocked_action"},
		{"config deny list adds to the built-in one", "ci.deploy:prod", "blocked_action"},
		{"unknown action", "github.repo.delete", "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.CheckGrantable(Scopes{MustParseScope(tt.scope)})
			if CodeOf(err) != tt.code {
				t.Fatalf("CheckGrantable(%s) = %v, want code %q", tt.scope, err, tt.code)
			}
		})
	}
	// One blocked scope refuses the whole set: nothing is trimmed.
	err := c.CheckGrantable(Scopes{MustParseScope("github.repo.read"), MustParseScope("errand.token.mint")})
	if CodeOf(err) != "blocked_action" {
		t.Fatalf("mixed set: %v", err)
	}
}

func TestNewCatalogRefusesDenyListedActionWithHarmlessClass(t *testing.T) {
	for _, name := range []string{"aws.iam.listusers", "vault.sys.policy", "gcp.keys.create", "svc.token.exchange"} {
		_, err := NewCatalog([]Action{{Name: name, Class: ClassRead, Risk: RiskLow}}, nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "deny-list") {
			t.Errorf("%s with class read: err = %v, want a deny-list refusal", name, err)
		}
	}
}

func TestNewCatalogRefusesUnknownReferences(t *testing.T) {
	acts := []Action{{Name: "a.read", Class: ClassRead, Risk: RiskLow}}
	if _, err := NewCatalog(acts, nil, []Grant{{Group: "g", Scopes: Scopes{MustParseScope("b.read")}}}, nil); err == nil {
		t.Error("grant of an action absent from the catalog was accepted")
	}
	if _, err := NewCatalog(acts, nil, []Grant{{Group: "g", Scopes: Scopes{MustParseScope("a.read")}, Audiences: []string{"https://x"}}}, nil); err == nil {
		t.Error("grant of an audience absent from the catalog was accepted")
	}
	if _, err := NewCatalog([]Action{{Name: "a.read", Class: "reader", Risk: RiskLow}}, nil, nil, nil); err == nil {
		t.Error("unknown class accepted")
	}
	if _, err := NewCatalog([]Action{{Name: "A.Read", Class: ClassRead, Risk: RiskLow}}, nil, nil, nil); err == nil {
		t.Error("non-canonical action name accepted")
	}
}

func TestGrantsAndRisk(t *testing.T) {
	c := testCatalog(t)
	in := func(groups ...string) Principal {
		return Principal{Issuer: "https://login.example", Subject: "alice", Kind: KindUser, Groups: groups}
	}
	if g := c.GrantsFor(in("eng")); len(g) != 1 || g[0].String() != "github.repo.read:acme/**" {
		t.Fatalf("GrantsFor(eng) = %v", g)
	}
	if g := c.GrantsFor(in("sales")); len(g) != 0 {
		t.Fatalf("GrantsFor(sales) = %v", g)
	}
	if r := c.Risk(Scopes{MustParseScope("github.repo.read"), MustParseScope("github.pr.write")}); r != RiskMedium {
		t.Fatalf("risk = %s", r)
	}
	sc := MustParseScope("github.repo.read:acme/api")
	if !c.Granted(in("eng"), sc, "https://api.github.com") || c.Granted(in("x"), sc, "https://api.github.com") {
		t.Fatal("Granted")
	}
}

// TestC02DenyListEvasion: renamings and case games around credential
// actions still hit the built-in deny list (a catalog entry that gives them
// a harmless class refuses to load).
func TestC02DenyListEvasion(t *testing.T) {
	names := []string{
		"aws.iam.createaccesskey", "AWS.IAM.CreateAccessKey", "aws.createaccesskey", "aws.iam_admin",
		"aws.iam-user.create", "gcp.serviceaccountkeys.create", "github.deploykeys.create", "github.pat.create",
		"k8s.rolebindings.create", "okta.user.resetpassword", "aws.iam.updateloginprofile", "aws.iam.attachrolepolicy",
		"vault.auth.token.create", "vault.sys.policy.write", "vault.identity.entity.update", "github.apikeys.list",
		"gitlab.tokens.create", "svc.personalaccesstoken.create", "okta.mfa.reset", "db.role.assign",
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			_, err := NewCatalog([]Action{{Name: strings.ToLower(n), Class: ClassWrite, Risk: RiskLow}}, nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), "deny-list") {
				t.Fatalf("%s with class write was accepted: %v", n, err)
			}
		})
	}
	// Ordinary actions are not caught.
	for _, n := range []string{"github.repo.read", "github.pr.write", "jira.issue.update", "db.orders.read", "slack.message.post"} {
		if _, err := NewCatalog([]Action{{Name: n, Class: ClassWrite, Risk: RiskLow}}, nil, nil, nil); err != nil {
			t.Errorf("%s refused: %v", n, err)
		}
	}
}

// An action's description is shown to approvers beside each scope: one
// short line that no character can turn into several, or reorder.
func TestActionDescriptionIsOneDisplaySafeLine(t *testing.T) {
	tests := []struct {
		name, desc string
		ok         bool
	}{
		{"plain", "Read the repository's code and issues", true},
		{"empty", "", true},
		{"newline", "Read code\nApproved by security", false},
		{"bidi override", "Read \u202ecode", false},
		{"too long", strings.Repeat("x", 201), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCatalog([]Action{{Name: "github.repo.read", Class: ClassRead, Risk: RiskLow, Description: tc.desc}}, nil, nil, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("NewCatalog: %v, want ok=%v", err, tc.ok)
			}
			if tc.ok {
				if a, _ := c.Action("github.repo.read"); a.Description != tc.desc {
					t.Fatalf("description %q, want %q", a.Description, tc.desc)
				}
			}
		})
	}
}
