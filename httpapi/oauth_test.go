package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

const (
	readAcme  = "github.repo.read:acme/**"
	writeAcme = "github.pr.write:acme/**"
)

// form posts an application/x-www-form-urlencoded body, with a bearer
// header when bearer is set, and checks the exchange against openapi.yaml.
func (e *env) form(path, bearer string, v url.Values) resp {
	e.t.Helper()
	body := v.Encode()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return e.send(req, []byte(body))
}

// asClient is v with the caller's workload ID token as an RFC 7523 client
// assertion.
func asClient(idToken string, v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	out.Set("client_assertion_type", assertionJWTBearer)
	out.Set("client_assertion", idToken)
	return out
}

func details(taskID string) string {
	b, _ := json.Marshal([]map[string]string{{"type": "errand_task", "task_id": taskID}})
	return string(b)
}

// exchangeForm is an RFC 8693 token exchange of agent's own ID token for
// a token of task, with the agent's client assertion.
func (e *env) exchangeForm(agent, task string, extra url.Values) url.Values {
	tok := e.agent(agent)
	v := url.Values{
		"grant_type": {grantTokenExchange}, "subject_token": {tok}, "subject_token_type": {tokenTypeIDToken},
		"authorization_details": {details(task)},
	}
	for k, vs := range extra {
		if vs == nil {
			delete(v, k)
			continue
		}
		v[k] = vs
	}
	return asClient(tok, v)
}

// oauthRefused asserts an OAuth refusal: status, RFC 6749 §5.2 JSON with
// error and Errand's code, a fixed description, no change to tasks,
// credentials or step-ups, and exactly one audit event, request.refused
// with that code. A 401 is a caller with no verified identity: its
// refusal is counted, and chained as its source's summary at the next
// flush (H03).
func (e *env) oauthRefused(before snapshot, r resp, status int, oauthErr, code string) {
	e.t.Helper()
	e.oauthRefusedBy(before, r, status, oauthErr, code, status != http.StatusUnauthorized)
}

// oauthRefusedBy is oauthRefused; identified says whether the caller had
// proved who it is before the refusal.
func (e *env) oauthRefusedBy(before snapshot, r resp, status int, oauthErr, code string, identified bool) {
	e.t.Helper()
	if r.Status != status || r.str("error") != oauthErr || r.str("code") != code {
		e.t.Fatalf("got %d %q/%q, want %d %q/%q: %s", r.Status, r.str("error"), r.str("code"), status, oauthErr, code, r.Raw)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("Content-Type %q, want application/json", ct)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		e.t.Errorf("Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
	if d := r.str("error_description"); d != oauthDescriptions[code] {
		e.t.Errorf("error_description %q, want the fixed text of %s", d, code)
	}
	if status == http.StatusUnauthorized && !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_client"`) {
		e.t.Errorf("401 without an invalid_client challenge: %q", r.Header.Get("WWW-Authenticate"))
	}
	e.refusalRecorded(before, code, identified)
}

// TestOAuthMetadataAdvertisesWhatWorks: RFC 8414 metadata names every
// endpoint of the front door, absolute under public_url, and only the
// grants, delivery modes, details types and client authentications that
// are served.
func TestOAuthMetadataAdvertisesWhatWorks(t *testing.T) {
	e := newEnv(t)
	r := e.mustStatus(e.do("GET", "/.well-known/oauth-authorization-server", "", nil), http.StatusOK)
	for k, want := range map[string]string{
		"token_endpoint":                      publicURL + "/oauth/token",
		"backchannel_authentication_endpoint": publicURL + "/oauth/bc-authorize",
		"introspection_endpoint":              publicURL + "/v1/introspect",
		"revocation_endpoint":                 publicURL + "/v1/revoke",
	} {
		if r.str(k) != want {
			t.Errorf("%s = %q, want %q", k, r.str(k), want)
		}
	}
	list := func(k string) string {
		b, _ := json.Marshal(r.JSON[k])
		return string(b)
	}
	for k, want := range map[string]string{
		"grant_types_supported":                                      `["` + grantTokenExchange + `","` + grantCIBA + `"]`,
		"backchannel_token_delivery_modes_supported":                 `["poll"]`,
		"authorization_details_types_supported":                      `["errand_task"]`,
		"token_endpoint_auth_methods_supported":                      `["private_key_jwt","bearer"]`,
		"backchannel_authentication_endpoint_auth_methods_supported": `["private_key_jwt","bearer"]`,
		"introspection_endpoint_auth_methods_supported":              `["private_key_jwt","bearer"]`,
		"revocation_endpoint_auth_methods_supported":                 `["private_key_jwt","bearer"]`,
		"token_endpoint_auth_signing_alg_values_supported":           `["ES256","RS256"]`,
	} {
		if got := list(k); got != want {
			t.Errorf("%s = %s, want %s", k, got, want)
		}
	}
	// ID-JAGs are advertised (the draft's identity-chaining property) only
	// where a target is configured.
	if _, ok := r.JSON["identity_chaining_requested_token_types_supported"]; ok {
		t.Error("identity_chaining_requested_token_types_supported without an ID-JAG target")
	}
	ie := newIDJAGEnv(t)
	r = ie.mustStatus(ie.do("GET", "/.well-known/oauth-authorization-server", "", nil), http.StatusOK)
	if got, _ := json.Marshal(r.JSON["identity_chaining_requested_token_types_supported"]); string(got) != `["`+tokenTypeIDJAG+`"]` {
		t.Errorf("identity_chaining_requested_token_types_supported = %s with a target", got)
	}
}

// TestOAuthTokenExchangeMintsLikeREST: an RFC 8693 exchange gives a token
// with the claims of a REST mint (sub the user, act the agent, task_id,
// aud, scope), authenticated either by a client assertion or the bearer
// header; a resource spelled differently names the same audience; no
// scope means every approved scope; the answer names the task.
func TestOAuthTokenExchangeMintsLikeREST(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme, writeAcme)

	r := e.mustStatus(e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{
		"scope": {readAcme}, "resource": {"HTTPS://API.GitHub.com:443/"},
	})), http.StatusOK)
	if r.str("token_type") != "Bearer" || r.str("issued_token_type") != tokenTypeAccess || r.str("scope") != readAcme {
		t.Fatalf("token response %s", r.Raw)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	if ad, _ := r.JSON["authorization_details"].([]any); len(ad) != 1 || ad[0].(map[string]any)["task_id"] != id {
		t.Errorf("authorization_details %v, want the task", r.JSON["authorization_details"])
	}
	at, err := e.tokens.Verify(context.Background(), r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if at.Audience != apiGitHub || at.TaskID != id || at.Subject != "alice" || at.Act.Subject != "bot" || at.Scope != readAcme {
		t.Fatalf("claims %+v", at)
	}

	// The bearer header authenticates too; no scope is every approved
	// scope, no resource the first requested audience.
	v := e.exchangeForm("bot", id, nil)
	v.Del("client_assertion")
	v.Del("client_assertion_type")
	r = e.mustStatus(e.form("/oauth/token", e.agent("bot"), v), http.StatusOK)
	at, err = e.tokens.Verify(context.Background(), r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if at.Audience != apiGitHub || at.Scope != "github.pr.write:acme/** github.repo.read:acme/**" &&
		at.Scope != "github.repo.read:acme/** github.pr.write:acme/**" {
		t.Fatalf("claims %+v, want every approved scope for %s", at, apiGitHub)
	}
	// audience (RFC 8693) aims like resource.
	r = e.mustStatus(e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{
		"scope": {readAcme}, "audience": {apiStage + "/"},
	})), http.StatusOK)
	if at, _ := e.tokens.Verify(context.Background(), r.str("access_token")); at.Audience != apiStage {
		t.Fatalf("audience %q, want %q", at.Audience, apiStage)
	}
}

// TestX03ExchangeNamesATaskOnlyThroughAuthorizationDetails: another
// agent's task, a pending task and an unknown task are refused; a task id
// smuggled in scope or resource names nothing.
func TestX03ExchangeNamesATaskOnlyThroughAuthorizationDetails(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	pending := e.task("bot", "alice", readAcme)
	cases := []struct {
		name           string
		agent, task    string
		extra          url.Values
		oauthErr, code string
	}{
		{"another agent's task", "mallory", id, url.Values{"scope": {readAcme}}, "invalid_grant", "not_task_party"},
		{"a pending task", "bot", pending, url.Values{"scope": {readAcme}, "resource": {apiGitHub}}, "invalid_grant", "task_not_active"},
		{"an unknown task", "bot", "tsk_aaaaaaaaaaaaaaaaaaaaaaaaaa", url.Values{"scope": {readAcme}}, "invalid_grant", "not_found"},
		{"task id in scope, no details", "bot", id, url.Values{"scope": {id}, "authorization_details": nil}, "invalid_authorization_details", "invalid_request"},
		{"task id in scope", "bot", id, url.Values{"scope": {id}}, "invalid_scope", "invalid_scope"},
		{"task id in resource", "bot", id, url.Values{"scope": {readAcme}, "resource": {id}}, "invalid_target", "invalid_target"},
		{"task id in resource, no details", "bot", id, url.Values{"resource": {id}, "authorization_details": nil}, "invalid_authorization_details", "invalid_request"},
		{"details of another type", "bot", id, url.Values{"authorization_details": {`[{"type":"payment","task_id":"` + id + `"}]`}}, "invalid_authorization_details", "invalid_request"},
		{"two details", "bot", id, url.Values{"authorization_details": {`[{"type":"errand_task","task_id":"` + id + `"},{"type":"errand_task","task_id":"` + pending + `"}]`}}, "invalid_authorization_details", "invalid_request"},
		{"a goal on an exchange", "bot", id, url.Values{"authorization_details": {`[{"type":"errand_task","task_id":"` + id + `","goal":"more"}]`}}, "invalid_authorization_details", "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			e.oauthRefused(before, e.form("/oauth/token", "", e.exchangeForm(c.agent, c.task, c.extra)), http.StatusBadRequest, c.oauthErr, c.code)
		})
	}
}

// TestO04UnapprovedOrUnknownTarget: an unknown resource, one the
// approval dropped, two audiences at once, or a resource trick are
// invalid_target, and nothing is minted.
func TestO04UnapprovedOrUnknownTarget(t *testing.T) {
	e := newEnv(t)
	id := e.task("bot", "alice", readAcme)
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"audiences": []string{apiGitHub}}), http.StatusOK)
	for name, res := range map[string][]string{
		"unknown":               {"https://admin-service.example.com"},
		"not approved":          {apiStage},
		"two audiences":         {apiGitHub, apiStage},
		"userinfo":              {"https://evil@api.github.com"},
		"dot segments":          {"https://api.github.com/x/.."},
		"query smuggling":       {"https://api.github.com?aud=x"},
		"fragment":              {"https://api.github.com#frag"},
		"admin-service by name": {"admin-service"},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			r := e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"scope": {readAcme}, "resource": res}))
			e.oauthRefused(before, r, http.StatusBadRequest, "invalid_target", "invalid_target")
		})
	}
	// audience is held to the same rule.
	before := e.snapshot()
	r := e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"scope": {readAcme}, "audience": {apiStage}}))
	e.oauthRefused(before, r, http.StatusBadRequest, "invalid_target", "invalid_target")
}

// TestO03TokenTypeConfusion: refresh or ID tokens are never issued (an
// ID-JAG is, to a configured target only: TestX07IDJAGRefusals), and a
// subject token of another type is refused; all invalid_request
// (RFC 8693 §2.2.2).
func TestO03TokenTypeConfusion(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	for name, extra := range map[string]url.Values{
		"refresh token requested": {"requested_token_type": {"urn:ietf:params:oauth:token-type:refresh_token"}},
		"ID token requested":      {"requested_token_type": {tokenTypeIDToken}},
		"SAML subject type":       {"subject_token_type": {"urn:ietf:params:oauth:token-type:saml2"}},
		"access token subject":    {"subject_token_type": {tokenTypeAccess}},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			extra.Set("scope", readAcme)
			r := e.form("/oauth/token", "", e.exchangeForm("bot", id, extra))
			e.oauthRefused(before, r, http.StatusBadRequest, "invalid_request", "unsupported_token_type")
		})
	}
	t.Run("missing subject token", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		r := e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"subject_token": nil}))
		e.oauthRefused(before, r, http.StatusBadRequest, "invalid_request", "invalid_request")
	})
	t.Run("another agent's subject token", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		r := e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"subject_token": {e.agent("mallory")}}))
		e.oauthRefused(before, r, http.StatusBadRequest, "invalid_request", "invalid_request")
	})
	t.Run("an actor token", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		r := e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"actor_token": {e.agent("bot")}, "actor_token_type": {tokenTypeIDToken}}))
		e.oauthRefused(before, r, http.StatusBadRequest, "invalid_request", "invalid_request")
	})
	t.Run("an unsupported grant", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		r := e.form("/oauth/token", "", asClient(e.agent("bot"), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}))
		e.oauthRefused(before, r, http.StatusBadRequest, "unsupported_grant_type", "unsupported_grant_type")
	})
}

// TestO01ErrandTokensNeverIdentity: a task token is refused as the
// subject token (invalid_request, token_not_accepted), as a client
// assertion and as the bearer header (invalid_client), with nothing
// minted.
func TestO01ErrandTokensNeverIdentity(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	task := e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated).str("access_token")

	before := e.snapshot()
	r := e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"subject_token": {task}, "scope": {readAcme}}))
	e.oauthRefused(before, r, http.StatusBadRequest, "invalid_request", "token_not_accepted")

	before = e.snapshot()
	v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
	v.Set("client_assertion", task)
	e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "token_not_accepted")

	before = e.snapshot()
	v.Del("client_assertion")
	v.Del("client_assertion_type")
	e.oauthRefused(before, e.form("/oauth/token", task, v), http.StatusUnauthorized, "invalid_client", "token_not_accepted")
}

// TestX06ClientAssertion: an ID-JAG, an expired, wrong-audience or
// untrusted workload token, a reused jti, no authentication at all or an
// assertion of another type are invalid_client; two methods at once are
// invalid_request; a user is no client of the token endpoint.
func TestX06ClientAssertion(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	key := e.agents.Keys()[0]
	claims := func(extra map[string]any) map[string]any {
		c := e.agents.Claims("bot", audience)
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	jti := "assertion-" + id
	cases := []struct {
		name      string
		assertion string
		code      string
	}{
		{"an ID-JAG", e.agents.Sign(t, key, map[string]any{"typ": "oauth-id-jag+jwt"}, claims(nil)), "token_not_accepted"},
		{"expired", e.agents.Token(t, "bot", audience, map[string]any{"iat": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-time.Minute).Unix()}), "invalid_token"},
		{"another audience", e.agents.Token(t, "bot", "someone-else", nil), "invalid_token"},
		{"an untrusted issuer", e.untrusted.Token(t, "bot", audience, nil), "invalid_token"},
		{"not a JWT", "not-a-jwt", "invalid_token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
			v.Set("client_assertion", c.assertion)
			e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", c.code)
		})
	}
	t.Run("a reused jti", func(t *testing.T) {
		e.t = t
		once := e.agents.Token(t, "bot", audience, map[string]any{"jti": jti})
		v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
		v.Set("client_assertion", once)
		e.mustStatus(e.form("/oauth/token", "", v), http.StatusOK)
		before := e.snapshot()
		e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "invalid_token")
		// on another replica too: the cache is the database's.
		r2 := e.replica()
		before = r2.snapshot()
		r2.oauthRefused(before, r2.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "invalid_token")
	})
	t.Run("no client authentication", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
		v.Del("client_assertion")
		v.Del("client_assertion_type")
		v.Set("client_id", "bot")
		e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "invalid_token")
	})
	t.Run("another assertion type", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
		v.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
		e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "invalid_token")
	})
	t.Run("a client_id naming someone else", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}, "client_id": {"mallory"}})
		e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusUnauthorized, "invalid_client", "invalid_token")
	})
	t.Run("two methods", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
		e.oauthRefusedBy(before, e.form("/oauth/token", e.agent("bot"), v), http.StatusBadRequest, "invalid_request", "invalid_request", false)
	})
	t.Run("a user as the client", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		v := e.exchangeForm("bot", id, url.Values{"scope": {readAcme}})
		v.Set("client_assertion", e.user("alice", "eng"))
		v.Set("subject_token", e.user("alice", "eng"))
		e.oauthRefused(before, e.form("/oauth/token", "", v), http.StatusBadRequest, "unauthorized_client", "wrong_principal_kind")
	})
}

// TestX08OAuthErrorsQuoteNothing: descriptions are fixed texts, never the
// attacker's input, and short.
func TestX08OAuthErrorsQuoteNothing(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	const marker = "MARKER-<script>-\"quote\\"
	for name, r := range map[string]resp{
		"scope":    e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"scope": {marker + ".x"}})),
		"resource": e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"resource": {"https://" + marker}})),
		"grant":    e.form("/oauth/token", "", asClient(e.agent("bot"), url.Values{"grant_type": {marker}})),
		"details":  e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"authorization_details": {marker}})),
		"subject":  e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"subject_token": {marker}})),
		"client":   e.form("/oauth/token", "", asClient(marker, url.Values{"grant_type": {grantTokenExchange}})),
		"hint": e.form("/oauth/bc-authorize", "", asClient(e.agent("bot"), url.Values{
			"login_hint": {marker}, "scope": {readAcme}, "resource": {apiGitHub}})),
	} {
		d := r.str("error_description")
		if r.Status < 400 || r.str("error") == "" {
			t.Errorf("%s: not refused: %s", name, r.Raw)
		}
		if strings.Contains(string(r.Raw), "MARKER") || len(d) > maxOAuthDescription || d == "" {
			t.Errorf("%s: the answer quotes the input or is unbounded: %s", name, r.Raw)
		}
		for _, c := range d {
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				t.Errorf("%s: error_description holds %q, outside RFC 6749 §5.2's set", name, c)
			}
		}
	}
	for code, d := range oauthDescriptions {
		if len(d) > maxOAuthDescription || strings.ContainsAny(d, "\"\\") {
			t.Errorf("description of %s is not a valid error_description: %q", code, d)
		}
		if _, ok := oauthErrorOf[code]; !ok && code != "internal" {
			t.Errorf("description of %s, a code with no OAuth error", code)
		}
	}
	for code := range oauthErrorOf {
		if oauthDescriptions[code] == "" {
			t.Errorf("no fixed description for %s", code)
		}
	}
}

// TestOAuthProblemsCarryTheOAuthError: /v1 problem documents gain the
// OAuth error where one fits.
func TestOAuthProblemsCarryTheOAuthError(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	r := e.mustStatus(e.mint("mallory", id, readAcme), http.StatusForbidden)
	if r.str("code") != "not_task_party" || r.str("error") != "invalid_grant" {
		t.Fatalf("problem %s, want error invalid_grant", r.Raw)
	}
	r = e.mustStatus(e.introspect("", "x"), http.StatusUnauthorized)
	if r.str("error") != "invalid_client" {
		t.Fatalf("problem %s, want error invalid_client", r.Raw)
	}
}

// TestOAuthIntrospectionAndRevocationTakeAClientAssertion: a resource
// server introspects, and an agent revokes, with a client assertion;
// a failed assertion is a 401 problem.
func TestOAuthIntrospectionAndRevocationTakeAClientAssertion(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	tok := e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated).str("access_token")

	r := e.mustStatus(e.form("/v1/introspect", "", asClient(e.resource("gateway"), url.Values{"token": {tok}, "client_id": {"gateway"}})), http.StatusOK)
	if r.JSON["active"] != true || r.str("task_id") != id {
		t.Fatalf("introspection %s", r.Raw)
	}
	e.mustStatus(e.form("/v1/revoke", "", asClient(e.agent("bot"), url.Values{"token": {tok}})), http.StatusOK)
	r = e.mustStatus(e.form("/v1/introspect", "", asClient(e.resource("gateway"), url.Values{"token": {tok}})), http.StatusOK)
	if r.JSON["active"] != false {
		t.Fatalf("introspection after revocation %s", r.Raw)
	}

	before := e.snapshot()
	// Refusals are RFC 6749 §5.2 JSON, with the invalid_client challenge,
	// as stock clients read them.
	r = e.form("/v1/introspect", "", asClient(tok, url.Values{"token": {tok}}))
	e.oauthRefused(before, r, http.StatusUnauthorized, "invalid_client", "token_not_accepted")
	before = e.snapshot()
	r = e.form("/v1/introspect", "", asClient(e.agent("bot"), url.Values{"token": {tok}}))
	e.oauthRefused(before, r, http.StatusBadRequest, "unauthorized_client", "wrong_principal_kind")
	before = e.snapshot()
	r = e.form("/v1/revoke", "", asClient(e.resource("gateway"), url.Values{"token": {tok}}))
	e.oauthRefused(before, r, http.StatusBadRequest, "unauthorized_client", "wrong_principal_kind")
}

// backchannel posts a CIBA backchannel request as agent.
func (e *env) backchannel(agent string, v url.Values) resp {
	e.t.Helper()
	return e.form("/oauth/bc-authorize", "", asClient(e.agent(agent), v))
}

// poll polls the token endpoint with auth_req_id as agent.
func (e *env) poll(agent, authReqID string) resp {
	e.t.Helper()
	return e.form("/oauth/token", "", asClient(e.agent(agent), url.Values{"grant_type": {grantCIBA}, "auth_req_id": {authReqID}}))
}

// rewindPoll moves a backchannel request's last poll back, as if its
// interval had passed.
func (e *env) rewindPoll(authReqID string) {
	e.t.Helper()
	if _, err := e.st.Pool().Exec(context.Background(),
		`UPDATE backchannel_requests SET last_poll_at = last_poll_at - interval '1 minute' WHERE id_sha256 = $1`,
		broker.HashID(authReqID)); err != nil {
		e.t.Fatal(err)
	}
}

// TestCIBAAskApprovePoll: a backchannel request creates a pending task
// the user sees; polls answer authorization_pending (not audited, nothing
// changed) until the user approves; then one token for the approved
// scopes and the first requested audience, the answer naming the task;
// the spent auth_req_id is invalid_grant.
func TestCIBAAskApprovePoll(t *testing.T) {
	e := newEnv(t)
	r := e.mustStatus(e.backchannel("bot", url.Values{
		"login_hint": {"alice"}, "binding_message": {"W4SCT"}, "scope": {readAcme + " " + writeAcme},
		"resource": {"https://STAGING-api.example.com/", apiGitHub}, "requested_expiry": {"600"},
		"authorization_details": {`[{"type":"errand_task","goal":"fix the flaky test","tool":"ci"}]`},
	}), http.StatusOK)
	ar := r.str("auth_req_id")
	if len(ar) < 26 || r.JSON["interval"] != float64(5) || r.JSON["expires_in"] != float64(600) {
		t.Fatalf("backchannel answer %s", r.Raw)
	}
	list := e.mustStatus(e.do("GET", "/v1/tasks?status=pending", e.user("alice"), nil), http.StatusOK)
	tasks, _ := list.JSON["tasks"].([]any)
	if len(tasks) != 1 {
		t.Fatalf("pending tasks %s", list.Raw)
	}
	task := tasks[0].(map[string]any)
	id := task["id"].(string)
	if task["goal"] != "fix the flaky test" || task["tool"] != "ci" || id == ar {
		t.Fatalf("task %v", task)
	}
	if auds, _ := json.Marshal(task["audiences"]); string(auds) != `["`+apiStage+`","`+apiGitHub+`"]` {
		t.Fatalf("audiences %s", auds)
	}

	before := e.snapshot()
	r = e.poll("bot", ar)
	if r.Status != http.StatusBadRequest || r.str("error") != "authorization_pending" {
		t.Fatalf("first poll %d %s", r.Status, r.Raw)
	}
	if after := e.snapshot(); after != before {
		t.Fatalf("authorization_pending changed the state or the log: %+v → %+v", before, after)
	}

	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"scopes": []string{readAcme}}), http.StatusOK)
	e.rewindPoll(ar)
	r = e.mustStatus(e.poll("bot", ar), http.StatusOK)
	at, err := e.tokens.Verify(context.Background(), r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if at.Audience != apiStage || at.Scope != readAcme || at.TaskID != id || at.Subject != "alice" || at.Act.Subject != "bot" {
		t.Fatalf("claims %+v", at)
	}
	if ad, _ := r.JSON["authorization_details"].([]any); len(ad) != 1 || ad[0].(map[string]any)["task_id"] != id {
		t.Fatalf("authorization_details %v", r.JSON["authorization_details"])
	}

	e.rewindPoll(ar)
	before = e.snapshot()
	e.oauthRefused(before, e.poll("bot", ar), http.StatusBadRequest, "invalid_grant", "invalid_grant")

	// The task is the REST API's: the token exchange gives its next token.
	r = e.mustStatus(e.form("/oauth/token", "", e.exchangeForm("bot", id, url.Values{"resource": {apiGitHub}})), http.StatusOK)
	if at, _ := e.tokens.Verify(context.Background(), r.str("access_token")); at.Audience != apiGitHub || at.Scope != readAcme {
		t.Fatalf("exchanged claims %+v", at)
	}
}

// TestX02CIBASlowDown: polling sooner than the interval is slow_down, each
// time adding 5 s to the interval, and never yields a token.
func TestX02CIBASlowDown(t *testing.T) {
	e := newEnv(t)
	ar := e.mustStatus(e.backchannel("bot", url.Values{"login_hint": {"alice"}, "scope": {readAcme},
		"resource": {apiGitHub}, "binding_message": {"poll fast"}}), http.StatusOK).str("auth_req_id")
	if r := e.poll("bot", ar); r.str("error") != "authorization_pending" {
		t.Fatalf("first poll %s", r.Raw)
	}
	id := e.pendingTask("alice")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	for _, want := range []int{10, 15} {
		before := e.snapshot()
		e.oauthRefused(before, e.poll("bot", ar), http.StatusBadRequest, "slow_down", "slow_down")
		var interval int
		if err := e.st.Pool().QueryRow(context.Background(), `SELECT interval_seconds FROM backchannel_requests WHERE id_sha256 = $1`,
			broker.HashID(ar)).Scan(&interval); err != nil {
			t.Fatal(err)
		}
		if interval != want {
			t.Fatalf("interval %d s, want %d s", interval, want)
		}
	}
	e.rewindPoll(ar)
	e.mustStatus(e.poll("bot", ar), http.StatusOK)
}

// pendingTask is the id of user's only pending task.
func (e *env) pendingTask(user string) string {
	e.t.Helper()
	list := e.mustStatus(e.do("GET", "/v1/tasks?status=pending", e.user(user), nil), http.StatusOK)
	tasks, _ := list.JSON["tasks"].([]any)
	if len(tasks) != 1 {
		e.t.Fatalf("pending tasks %s", list.Raw)
	}
	return tasks[0].(map[string]any)["id"].(string)
}

// TestX01CIBAPolledByOthersGuessedDeniedExpired: another agent's poll and
// a guessed id are invalid_grant alike; a denied task is access_denied;
// an expired one expired_token; ids are 256 random bits.
func TestX01CIBAPolledByOthersGuessedDeniedExpired(t *testing.T) {
	e := newEnv(t)
	ask := func(agent, user string, ttl string) string {
		v := url.Values{"login_hint": {user}, "scope": {readAcme}, "resource": {apiGitHub}, "binding_message": {"x"}}
		if ttl != "" {
			v.Set("requested_expiry", ttl)
		}
		return e.mustStatus(e.backchannel(agent, v), http.StatusOK).str("auth_req_id")
	}
	ar := ask("bot", "alice", "")
	if len(ar) != 52 {
		t.Fatalf("auth_req_id %q is not 256 bits in base32", ar)
	}
	if _, err := e.st.Pool().Exec(context.Background(), `SELECT 1 FROM backchannel_requests WHERE id_sha256 = $1`, ar); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM backchannel_requests WHERE id_sha256 = $1 OR task_id = $1`, ar).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the auth_req_id is stored in the clear (%d rows, %v)", n, err)
	}
	t.Run("another agent", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.oauthRefused(before, e.poll("mallory", ar), http.StatusBadRequest, "invalid_grant", "invalid_grant")
	})
	t.Run("guessed", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.oauthRefused(before, e.poll("bot", strings.Repeat("a", 52)), http.StatusBadRequest, "invalid_grant", "invalid_grant")
		before = e.snapshot()
		e.oauthRefused(before, e.poll("bot", "tsk_"+ar[:26]), http.StatusBadRequest, "invalid_grant", "invalid_grant")
	})
	t.Run("a user polls", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		r := e.form("/oauth/token", "", asClient(e.user("alice", "eng"), url.Values{"grant_type": {grantCIBA}, "auth_req_id": {ar}}))
		e.oauthRefused(before, r, http.StatusBadRequest, "unauthorized_client", "wrong_principal_kind")
	})
	t.Run("denied", func(t *testing.T) {
		e.t = t
		id := e.pendingTask("alice")
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/deny", e.user("alice", "eng"), map[string]any{"reason": "no"}), http.StatusOK)
		before := e.snapshot()
		e.oauthRefused(before, e.poll("bot", ar), http.StatusBadRequest, "access_denied", "access_denied")
	})
	t.Run("expired", func(t *testing.T) {
		e.t = t
		short := ask("bot", "bob", "1")
		time.Sleep(1100 * time.Millisecond)
		before := e.snapshot()
		e.oauthRefused(before, e.poll("bot", short), http.StatusBadRequest, "expired_token", "expired_token")
	})
	t.Run("closed after approval", func(t *testing.T) {
		e.t = t
		ar := ask("bot", "carol", "")
		id := e.pendingTask("carol")
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("carol", "eng"), map[string]any{}), http.StatusOK)
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.user("carol"), nil), http.StatusOK)
		before := e.snapshot()
		e.oauthRefused(before, e.poll("bot", ar), http.StatusBadRequest, "invalid_grant", "invalid_grant")
	})
}

// TestCIBABackchannelRefusals: every refusal of the backchannel endpoint
// is its OAuth error, audited once, with no task created.
func TestCIBABackchannelRefusals(t *testing.T) {
	e := newEnv(t)
	ok := url.Values{"login_hint": {"alice"}, "scope": {readAcme}, "resource": {apiGitHub}, "binding_message": {"fine"}}
	with := func(k, v string) url.Values {
		out := url.Values{}
		for kk, vs := range ok {
			out[kk] = vs
		}
		if v == "" {
			delete(out, k)
		} else {
			out.Set(k, v)
		}
		return out
	}
	cases := []struct {
		name           string
		v              url.Values
		oauthErr, code string
	}{
		{"unknown resource", with("resource", "https://admin-service.example.com"), "invalid_target", "invalid_target"},
		{"resource with userinfo", with("resource", "https://x@api.github.com"), "invalid_target", "invalid_target"},
		{"unknown action", with("scope", "github.nothing.here:acme/api"), "invalid_scope", "invalid_scope"},
		{"unknown action and no goal", func() url.Values {
			v := with("scope", "github.nothing.here:acme/api")
			v.Del("binding_message")
			return v
		}(), "invalid_scope", "invalid_scope"},
		{"blocked action", with("scope", "aws.iam.createaccesskey"), "invalid_scope", "blocked_action"},
		{"no login_hint", with("login_hint", ""), "invalid_request", "invalid_request"},
		{"no scope", with("scope", ""), "invalid_request", "invalid_request"},
		{"no resource", with("resource", ""), "invalid_request", "invalid_request"},
		{"no goal and no binding message", with("binding_message", ""), "invalid_request", "invalid_request"},
		{"binding message with a newline", with("binding_message", "approve\nthis"), "invalid_request", "invalid_request"},
		{"binding message with a bidi override", with("binding_message", "ok\u202etxt.exe"), "invalid_request", "invalid_request"},
		{"bad requested_expiry", with("requested_expiry", "-5"), "invalid_request", "invalid_request"},
		{"id_token_hint", with("id_token_hint", "x"), "invalid_request", "invalid_request"},
		{"a task id in the details", with("authorization_details", `[{"type":"errand_task","task_id":"tsk_aaaaaaaaaaaaaaaaaaaaaaaaaa"}]`), "invalid_authorization_details", "invalid_request"},
		{"unknown member in the details", with("authorization_details", `[{"type":"errand_task","goal":"g","scopes":["x"]}]`), "invalid_authorization_details", "invalid_request"},
		{"unknown user issuer", with("login_hint", "https://evil.example#alice"), "invalid_request", "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			e.oauthRefused(before, e.backchannel("bot", c.v), http.StatusBadRequest, c.oauthErr, c.code)
		})
	}
	t.Run("no client authentication", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.oauthRefused(before, e.form("/oauth/bc-authorize", "", ok), http.StatusUnauthorized, "invalid_client", "invalid_token")
	})
	t.Run("a user as the client", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		e.oauthRefused(before, e.form("/oauth/bc-authorize", "", asClient(e.user("alice", "eng"), ok)), http.StatusBadRequest, "unauthorized_client", "wrong_principal_kind")
	})
	t.Run("a repeated parameter", func(t *testing.T) {
		e.t = t
		v := with("scope", readAcme)
		v.Add("login_hint", "bob")
		before := e.snapshot()
		e.oauthRefusedBy(before, e.backchannel("bot", v), http.StatusBadRequest, "invalid_request", "invalid_request", false)
	})
	t.Run("JSON instead of a form", func(t *testing.T) {
		e.t = t
		before := e.snapshot()
		r := e.do("POST", "/oauth/bc-authorize", "", map[string]any{"login_hint": "alice"})
		if r.Status != http.StatusBadRequest || r.str("error") != "invalid_request" {
			t.Fatalf("got %d %s", r.Status, r.Raw)
		}
		if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
			t.Fatal(err)
		}
		if after := e.snapshot(); after.tasks != before.tasks || after.auditSeq != before.auditSeq+1 {
			t.Fatalf("state %+v → %+v", before, after)
		}
	})
}

// TestOAuthIntrospectionRefusesTwoClientAuthentications: the bearer header
// and a client assertion at once are invalid_request (RFC 6749 §2.3).
func TestOAuthIntrospectionRefusesTwoClientAuthentications(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	r := e.form("/v1/introspect", e.resource("gateway"), asClient(e.resource("gateway"), url.Values{"token": {"x"}}))
	if r.Status != http.StatusBadRequest || r.str("code") != "invalid_request" || r.str("error") != "invalid_request" {
		t.Fatalf("got %d %s", r.Status, r.Raw)
	}
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := e.snapshot(); after.auditSeq != before.auditSeq+1 {
		t.Fatalf("audit grew by %d events, want the one summary", after.auditSeq-before.auditSeq)
	}
}

// TestX08RepeatedOrMalformedFormIsRefusedWithBearer: with the bearer
// header, as with a client assertion, introspection and revocation refuse
// a repeated token (token=A&token=B used to revoke A alone and answer 200)
// and a malformed body, changing nothing.
func TestX08RepeatedOrMalformedFormIsRefusedWithBearer(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	a := e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated).str("access_token")
	b := e.mustStatus(e.mint("bot", id, readAcme), http.StatusCreated).str("access_token")
	before := e.snapshot()
	e.oauthRefused(before, e.form("/v1/revoke", e.agent("bot"), url.Values{"token": {a, b}}), http.StatusBadRequest, "invalid_request", "invalid_request")
	before = e.snapshot()
	e.oauthRefused(before, e.form("/v1/introspect", e.resource("gateway"), url.Values{"token": {a, b}}), http.StatusBadRequest, "invalid_request", "invalid_request")
	raw := "token=" + b + "&%zz"
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/introspect", strings.NewReader(raw))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+e.resource("gateway"))
	before = e.snapshot()
	e.oauthRefused(before, e.send(req, []byte(raw)), http.StatusBadRequest, "invalid_request", "invalid_request")
	for _, tok := range []string{a, b} {
		if r := e.introspect(e.resource("gateway"), tok); r.JSON["active"] != true {
			t.Fatalf("a refused revocation revoked a token: %s", r.Raw)
		}
	}
}
