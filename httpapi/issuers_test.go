package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/time/rate"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/issuer/jwt"
	"github.com/errandhq/errand/policy"
)

// configEnv is Errand wired as serve wires it from an errand.yaml (the
// catalog, grants, issuers, naming and policy checks all come from the
// config package) over PostgreSQL. The text's ${NAME} references are
// replaced by the URLs of idps, real OIDC providers over HTTP, and
// ${POLICIES} by files written from policies. e.agents, e.users,
// e.users2 and e.resources are the providers of those names.
func configEnv(t *testing.T, text string, idps map[string]*testoidc.Issuer, policies map[string]string) *env {
	t.Helper()
	vars := map[string]string{}
	for name, idp := range idps {
		vars[name] = idp.URL
	}
	expand := func(s string) string { return os.Expand(s, func(k string) string { return vars[k] }) }
	dir := t.TempDir()
	var files []string
	for name, body := range policies {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(expand(body)), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, `"`+p+`"`)
	}
	vars["POLICIES"] = "[" + strings.Join(files, ", ") + "]"
	cfg, err := config.Parse([]byte(expand(text)), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: testpg.Store(t), agents: idps["CORP_AGENTS"], users: idps["CORP_USERS"],
		users2: idps["PARTNER_USERS"], resources: idps["RESOURCES"]}
	if e.verifier, err = identity.New(cfg.IdentityConfig()); err != nil {
		t.Fatal(err)
	}
	if e.tokens, err = jwt.New(context.Background(), jwt.Config{Issuer: cfg.PublicURL, Keys: e.st, Secret: []byte(cfg.SystemSecret)}); err != nil {
		t.Fatal(err)
	}
	bcfg := broker.Config{Store: e.st, Tokens: e.tokens, Catalog: cat, UserIssuers: cfg.UserIssuers(),
		AgentIssuers: cfg.AgentIssuers(), MaxPendingPerAgent: 10000}
	if len(cfg.Policies) > 0 {
		if e.engine, err = policy.NewEngine(cfg.PolicySource(), cfg.PolicyCheck(cat)); err != nil {
			t.Fatal(err)
		}
		bcfg.Policy = e.engine
	}
	if e.svc, err = broker.NewService(bcfg); err != nil {
		t.Fatal(err)
	}
	e.api, err = New(Config{
		Service: e.svc, Auth: e.verifier, PublicURL: cfg.PublicURL, JWKS: e.tokens.JWKS,
		UserIssuers: cfg.UserIssuers(), CursorKey: []byte("cursor-key-for-tests-0123456789"),
		Logger: logger(nil), RateLimits: RateLimits{PerPrincipal: rate.Inf, PerAddress: rate.Inf},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.api)
	t.Cleanup(e.srv.Close)
	return e
}

// twoOfEachConfig trusts two user issuers (corp and partner) whose users
// both assert a group "eng", and two agent issuers (corp's and partner's
// workloads); each issuer's "eng" has its own grant.
const twoOfEachConfig = `
public_url: ` + publicURL + `
database_url: postgres://unused-by-the-test
system_secret: ` + secret + `
issuers:
  - {url: "${CORP_AGENTS}", audience: errand, kind: agent}
  - {url: "${PARTNER_AGENTS}", audience: errand, kind: agent}
  - {url: "${CORP_USERS}", audience: errand, kind: user, groups_claim: groups, auditor_group: auditors}
  - {url: "${PARTNER_USERS}", audience: errand, kind: user, groups_claim: groups}
  - {url: "${RESOURCES}", audience: errand, kind: resource}
grants:
  - issuer: "${CORP_USERS}"
    group: eng
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
  - issuer: "${PARTNER_USERS}"
    group: eng
    scopes: ["github.repo.read:acme/docs", "github.repo.read:acme/wiki"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
audiences:
  - {url: "` + apiGitHub + `", environment: prod, introspectors: ["${RESOURCES}#gateway"]}
policies: ${POLICIES}
`

// twoOfEachPolicies name principals and groups as policies see them: the
// docs are corp eng's, and on the wiki an enforcement point admits corp's
// bot only.
var twoOfEachPolicies = map[string]string{"p.cedar": `@id("allow") permit (principal, action, resource);
@id("docs-for-corp-eng")
forbid (principal, action, resource == Resource::"acme/docs")
when { context.operation == "mint" } unless { context.user in Group::"${CORP_USERS}#eng" };
@id("wiki-for-corp-bot")
forbid (principal, action, resource == Resource::"acme/wiki")
when { context.operation == "evaluate" } unless { principal == Agent::"${CORP_AGENTS}#bot" };
`}

type twoOfEach struct {
	*env
	corpAgents, partnerAgents, corpUsers, partnerUsers *testoidc.Issuer
}

func newTwoOfEach(t *testing.T) twoOfEach {
	t.Helper()
	idps := map[string]*testoidc.Issuer{}
	for _, name := range []string{"CORP_AGENTS", "PARTNER_AGENTS", "CORP_USERS", "PARTNER_USERS", "RESOURCES"} {
		idps[name] = testoidc.New(t)
	}
	e := configEnv(t, twoOfEachConfig, idps, twoOfEachPolicies)
	return twoOfEach{env: e, corpAgents: idps["CORP_AGENTS"], partnerAgents: idps["PARTNER_AGENTS"],
		corpUsers: idps["CORP_USERS"], partnerUsers: idps["PARTNER_USERS"]}
}

func idToken(t *testing.T, idp *testoidc.Issuer, sub string, groups ...string) string {
	var extra map[string]any
	if groups != nil {
		extra = map[string]any{"groups": groups}
	}
	return idp.Token(t, sub, audience, extra)
}

// approvedFor creates, as agent bot of agents, a task for alice of users,
// and has her (in group eng) approve it.
func (e twoOfEach) approvedFor(agents, users *testoidc.Issuer, scopes ...string) string {
	e.t.Helper()
	t := e.t.(*testing.T)
	r := e.mustStatus(e.do("POST", "/v1/tasks", idToken(t, agents, "bot"), map[string]any{
		"on_behalf_of": users.URL + "#alice", "goal": "read the docs", "scopes": scopes, "audiences": []string{apiGitHub},
	}), http.StatusCreated)
	id := r.str("id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", idToken(t, users, "alice", "eng"), map[string]any{}), http.StatusOK)
	return id
}

// TestH04PartnerGroupDoesNotGetCorpGrant: partner "alice" asserting
// group eng holds partner eng's grant, never corp eng's: approving
// beyond it is refused (problem+json, nothing changed, audited), and so
// is a mint that a policy reserves to corp's Group::"<corp>#eng".
func TestH04PartnerGroupDoesNotGetCorpGrant(t *testing.T) {
	e := newTwoOfEach(t)
	partnerAlice := idToken(t, e.partnerUsers, "alice", "eng")
	task := func(scopes ...string) string {
		return e.mustStatus(e.do("POST", "/v1/tasks", idToken(t, e.partnerAgents, "bot"), map[string]any{
			"on_behalf_of": e.partnerUsers.URL + "#alice", "goal": "g", "scopes": scopes, "audiences": []string{apiGitHub},
		}), http.StatusCreated).str("id")
	}
	id := task("github.pr.write:acme/api")
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", partnerAlice, map[string]any{}), http.StatusForbidden, "scope_exceeds_grant")
	id = task("github.repo.read:acme/**")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", partnerAlice, map[string]any{}), http.StatusForbidden, "scope_exceeds_grant")
	// Her own issuer's grant she may delegate.
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", partnerAlice, map[string]any{"scopes": []string{"github.repo.read:acme/wiki"}}), http.StatusOK)

	// The docs are corp eng's (Group::"<corp>#eng"), though partner's
	// grant reaches them: corp alice's bot may mint them, partner's not.
	corp := e.approvedFor(e.corpAgents, e.corpUsers, "github.repo.read:acme/docs")
	e.mustStatus(e.do("POST", "/v1/tasks/"+corp+"/tokens", idToken(t, e.corpAgents, "bot"), map[string]any{
		"scopes": []string{"github.repo.read:acme/docs"}, "audience": apiGitHub}), http.StatusCreated)
	partner := e.approvedFor(e.partnerAgents, e.partnerUsers, "github.repo.read:acme/docs")
	before = e.snapshot()
	e.policyDenied(before, e.do("POST", "/v1/tasks/"+partner+"/tokens", idToken(t, e.partnerAgents, "bot"), map[string]any{
		"scopes": []string{"github.repo.read:acme/docs"}, "audience": apiGitHub}), "docs-for-corp-eng")
}

// claimsOf decodes a JWT's claims; the signature is checked by
// introspection, which must agree with them.
func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestH04SameSubAtTwoIssuersIsNeverOneName: corp's alice and bot, and
// partner's alice and bot, have the same subjects. Their tokens (sub,
// client_id, act), introspection answers, audit actors and Cedar
// principals all tell them apart; single-issuer deployments keep bare
// names (TestFullFlow).
func TestH04SameSubAtTwoIssuersIsNeverOneName(t *testing.T) {
	e := newTwoOfEach(t)
	rs := e.resource("gateway")
	type party struct {
		agents, users *testoidc.Issuer
		task, token   string
	}
	parties := []*party{{agents: e.corpAgents, users: e.corpUsers}, {agents: e.partnerAgents, users: e.partnerUsers}}
	for _, p := range parties {
		p.task = e.approvedFor(p.agents, p.users, "github.repo.read:acme/wiki")
		p.token = e.mustStatus(e.do("POST", "/v1/tasks/"+p.task+"/tokens", idToken(t, p.agents, "bot"), map[string]any{
			"scopes": []string{"github.repo.read:acme/wiki"}, "audience": apiGitHub}), http.StatusCreated).str("access_token")
	}
	for _, p := range parties {
		c := claimsOf(t, p.token)
		act, _ := c["act"].(map[string]any)
		wantSub, wantAgent := p.users.URL+"#alice", p.agents.URL+"#bot"
		if c["sub"] != wantSub || c["client_id"] != wantAgent || act["sub"] != wantAgent || act["iss"] != p.agents.URL {
			t.Fatalf("claims of %s's token: sub %v client_id %v act %v; want sub %s, client_id and act.sub %s",
				p.users.URL, c["sub"], c["client_id"], act, wantSub, wantAgent)
		}
		in := e.mustStatus(e.introspect(rs, p.token), http.StatusOK)
		inAct, _ := in.JSON["act"].(map[string]any)
		if in.JSON["active"] != true || in.str("sub") != wantSub || in.str("client_id") != wantAgent ||
			inAct["sub"] != wantAgent || inAct["iss"] != p.agents.URL {
			t.Fatalf("introspection differs from the token: %s", in.Raw)
		}
		// The audit log records each actor with its issuer.
		auditor := idToken(t, e.corpUsers, "carol", "auditors")
		evs := e.mustStatus(e.do("GET", "/v1/audit/events?task_id="+p.task, auditor, nil), http.StatusOK)
		actors := map[string]string{}
		for _, ev := range evs.JSON["events"].([]any) {
			m := ev.(map[string]any)
			a := m["actor"].(map[string]any)
			actors[m["type"].(string)] = a["kind"].(string) + " " + a["iss"].(string) + "#" + a["sub"].(string)
		}
		if actors["task.created"] != "agent "+wantAgent || actors["task.approved"] != "user "+wantSub ||
			actors["credential.issued"] != "agent "+wantAgent {
			t.Fatalf("audit actors of %s: %v", p.task, actors)
		}
	}
	if claimsOf(t, parties[0].token)["sub"] == claimsOf(t, parties[1].token)["sub"] {
		t.Fatal("corp alice and partner alice have one sub")
	}
	// Cedar's principal is the agent of its issuer: the wiki is corp's
	// bot's at the enforcement point, not partner's namesake.
	for i, want := range []bool{true, false} {
		r := e.mustStatus(e.evaluate(rs, azBody(parties[i].token, "github.repo.read", "acme/wiki", nil)), http.StatusOK)
		if r.JSON["decision"] != want {
			t.Fatalf("evaluation of %s's bot on the wiki: %s, want %v", parties[i].agents.URL, r.Raw, want)
		}
	}
}
