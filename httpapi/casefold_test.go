package httpapi

import (
	"net/http"
	"testing"

	"github.com/errandhq/errand/internal/testing/testoidc"
)

// caseConfig has GitHub as README configures it, comparing resources
// case-insensitively (acme/INFRA is acme/infra there), and a staging API
// that does not.
const caseConfig = `
public_url: ` + publicURL + `
database_url: postgres://unused-by-the-test
system_secret: ` + secret + `
issuers:
  - {url: "${CORP_AGENTS}", audience: errand, kind: agent}
  - {url: "${CORP_USERS}", audience: errand, kind: user, groups_claim: groups}
  - {url: "${RESOURCES}", audience: errand, kind: resource}
grants:
  - group: eng
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
audiences:
  - {url: "` + apiGitHub + `", environment: prod, case_insensitive: true, introspectors: ["${RESOURCES}#gateway"]}
  - {url: "` + apiStage + `", environment: staging}
policies: ${POLICIES}
`

// protectInfra is README's rule protecting acme/infra, verbatim.
const protectInfra = `@id("allow") permit (principal, action, resource);
@id("protect-infra")
forbid (principal, action, resource)
when { resource.head == "acme/infra" || resource in Resource::"acme/infra/**" ||
       (resource.wildcard && ["", "acme"].contains(resource.head)) };
`

func caseEnv(t *testing.T, policies string) *env {
	t.Helper()
	idps := map[string]*testoidc.Issuer{}
	for _, name := range []string{"CORP_AGENTS", "CORP_USERS", "RESOURCES"} {
		idps[name] = testoidc.New(t)
	}
	return configEnv(t, caseConfig, idps, map[string]string{"p.cedar": policies})
}

func createFor(e *env, scopes []string, audiences ...string) resp {
	e.t.Helper()
	return e.do("POST", "/v1/tasks", e.agent("bot"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": scopes, "audiences": audiences,
	})
}

// TestH06CaseVariantOfAProtectedPathIsDenied: at GitHub acme/INFRA is
// acme/infra, and README's rule protecting acme/infra holds against every
// spelling of it, at creation, approval and mint alike; other resources
// are kept, approved and minted in the one lower-case form GitHub acts on.
func TestH06CaseVariantOfAProtectedPathIsDenied(t *testing.T) {
	e := caseEnv(t, protectInfra)
	for _, sc := range []string{"github.repo.read:acme/INFRA/**", "github.repo.read:acme/Infra", "github.pr.write:ACME/infra/x", "github.repo.read:Acme/*"} {
		before := e.snapshot()
		e.policyDenied(before, createFor(e, []string{sc}, apiGitHub), "protect-infra")
		// One case-insensitive audience makes the task's scopes lower case
		// for all of its audiences.
		before = e.snapshot()
		e.policyDenied(before, createFor(e, []string{sc}, apiStage, apiGitHub), "protect-infra")
	}
	// At a case-sensitive API, acme/INFRA is another resource than the
	// protected acme/infra.
	stage := e.mustStatus(createFor(e, []string{"github.repo.read:acme/INFRA/x"}, apiStage), http.StatusCreated)
	if got := strList(stage.JSON["scopes"]); len(got) != 1 || got[0] != "github.repo.read:acme/INFRA/x" {
		t.Fatalf("scopes at a case-sensitive audience: %v", got)
	}

	// Requested, approved and minted scopes are kept in lower case.
	r := e.mustStatus(createFor(e, []string{"github.repo.read:Acme/API", "github.repo.read:acme/api", "github.pr.write:acme/Web"}, apiGitHub), http.StatusCreated)
	if got := strList(r.JSON["scopes"]); len(got) != 2 || got[0] != "github.pr.write:acme/web" || got[1] != "github.repo.read:acme/api" {
		t.Fatalf("requested scopes: %v", got)
	}
	id := r.str("id")
	alice := e.user("alice", "eng")
	a := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", alice, map[string]any{"scopes": []string{"github.repo.read:ACME/api", "github.pr.write:Acme/WEB"}}), http.StatusOK)
	if got := strList(a.JSON["approved_scopes"]); len(got) != 2 || got[0] != "github.pr.write:acme/web" || got[1] != "github.repo.read:acme/api" {
		t.Fatalf("approved scopes: %v", got)
	}
	m := e.mustStatus(e.mint("bot", id, "github.repo.read:acme/Api"), http.StatusCreated)
	if m.str("scope") != "github.repo.read:acme/api" {
		t.Fatalf("minted scope %q", m.str("scope"))
	}
}

// protectInfraAt is README's rule protecting acme/infra, speaking only
// at the given operations.
func protectInfraAt(ops string) string {
	return `@id("allow") permit (principal, action, resource);
@id("protect-infra")
forbid (principal, action, resource)
when { ` + ops + `.contains(context.operation) }
when { resource.head == "acme/infra" || resource in Resource::"acme/infra/**" ||
       (resource.wildcard && ["", "acme"].contains(resource.head)) };
`
}

// TestH06MintFoldsCase: with the rule speaking at mint only (a task may be
// broad), no mint reaches acme/infra through a case variant.
func TestH06MintFoldsCase(t *testing.T) {
	e := caseEnv(t, protectInfraAt(`["mint"]`))
	id := e.mustStatus(createFor(e, []string{"github.repo.read:acme/**"}, apiGitHub), http.StatusCreated).str("id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	for _, sc := range []string{"github.repo.read:acme/INFRA/secrets", "github.repo.read:acme/Infra/*", "github.repo.read:acme/infrA"} {
		before := e.snapshot()
		e.policyDenied(before, e.mint("bot", id, sc), "protect-infra")
	}
	if m := e.mustStatus(e.mint("bot", id, "github.repo.read:acme/Docs"), http.StatusCreated); m.str("scope") != "github.repo.read:acme/docs" {
		t.Fatalf("minted scope %q", m.str("scope"))
	}
}

// TestH06AuthZENFoldsCase: an enforcement point asking about
// acme/INFRA/secrets at GitHub is asking about acme/infra/secrets, and the
// rule protecting it (here speaking at evaluation only, so that a token
// for acme/** exists) answers no under every spelling.
func TestH06AuthZENFoldsCase(t *testing.T) {
	e := caseEnv(t, protectInfraAt(`["evaluate"]`))
	id := e.mustStatus(createFor(e, []string{"github.repo.read:acme/**"}, apiGitHub), http.StatusCreated).str("id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	wide := e.mustStatus(e.mint("bot", id, "github.repo.read:acme/**"), http.StatusCreated).str("access_token")
	one := e.mustStatus(e.mint("bot", id, "github.repo.read:acme/api"), http.StatusCreated).str("access_token")
	rs := e.resource("gateway")
	for _, c := range []struct {
		token, resource string
		want            bool
	}{
		{wide, "acme/INFRA/secrets", false},
		{wide, "ACME/Infra/Secrets", false},
		{wide, "acme/infra/secrets", false},
		{wide, "acme/API", true},
		{one, "Acme/Api", true},
		{one, "acme/web", false},
	} {
		r := e.mustStatus(e.evaluate(rs, azBody(c.token, "github.repo.read", c.resource, nil)), http.StatusOK)
		if r.JSON["decision"] != c.want {
			t.Errorf("evaluation of %s: %s, want %v", c.resource, r.Raw, c.want)
		}
	}
}
