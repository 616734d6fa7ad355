package httpapi

import (
	"testing"
	"time"

	"github.com/errandhq/errand/internal/testing/testoidc"
)

// The attacks on identity tokens themselves (forged signatures, alg none,
// key confusion, time, audience and issuer claims, malformed and
// duplicate claims, access tokens as identity, header keys, unknown kid
// floods, subject allow-lists) are tested against the verifier in package
// identity. Here: that such a refusal reaches the caller as a 401
// problem, changes nothing and is audited, and how identity meets the
// API (principal kinds, issuers, outages).

// TestBadIdentityIsA401Problem: a forged and an unfit identity token are
// each refused with 401, its problem+json code and WWW-Authenticate, on a
// route that would otherwise change state.
func TestBadIdentityIsA401Problem(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name, token, code string
	}{
		{"alg none", testoidc.Forge(t, map[string]any{"alg": "none", "typ": "JWT"}, e.agents.Claims("agent-1", audience), nil), "invalid_token"},
		{"an untrusted issuer", e.untrusted.Token(t, "agent-1", audience, nil), "invalid_token"},
		{"an access token as identity", e.agents.Token(t, "agent-1", audience, map[string]any{"iss": publicURL}), "token_not_accepted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			r := e.do("POST", "/v1/tasks", tt.token, map[string]any{
				"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub},
			})
			e.refused(before, r, 401, tt.code)
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestMissingAuthorization(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", "", map[string]any{}), 401, "invalid_token")
}

// TestJ10KindsAreDisjoint: a user-issuer token whose sub equals an agent's
// is a different principal and cannot act as that agent (J10).
func TestJ10KindsAreDisjoint(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-7", "alice", "github.repo.read:acme/**")
	before := e.snapshot()
	r := e.do("POST", "/v1/tasks/"+id+"/tokens", e.users.Token(t, "agent-7", audience, nil),
		map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub})
	e.refused(before, r, 403, "wrong_principal_kind")
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/close", e.resources.Token(t, "agent-7", audience, nil), nil), 403, "wrong_principal_kind")
}

// TestF01IdentityProviderDownIsUnavailableNotUnauthorized: an unreachable
// issuer is an outage (503), never a 401.
func TestF01IdentityProviderDownIsUnavailableNotUnauthorized(t *testing.T) {
	e := newEnv(t)
	e.agents.SetDown(true)
	r := e.do("GET", "/v1/tasks", e.agent("agent-1"), nil)
	if r.Status != 503 || r.str("code") != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("IdP down: %d %s", r.Status, r.Raw)
	}
}

// TestJ10SameSubAtAnotherTrustedUserIssuerCannotApprove: with two trusted
// user issuers, "alice" at one is not "alice" at the other (J10).
func TestJ10SameSubAtAnotherTrustedUserIssuerCannotApprove(t *testing.T) {
	e := newEnvWith(t, envOptions{twoUserIssuers: true})
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": e.users.URL + "#alice", "goal": "g", "scopes": []string{"github.repo.read:acme/api"},
		"audiences": []string{apiGitHub},
	}), 201)
	id := r.str("id")
	if r.str("on_behalf_of") != e.users.URL+"#alice" {
		t.Fatalf("on_behalf_of = %q", r.str("on_behalf_of"))
	}
	before := e.snapshot()
	other := e.users2.Token(t, "alice", audience, map[string]any{"groups": []string{"eng"}})
	e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", other, nil), 403, "approval_forbidden")
	// Ambiguous on_behalf_of is refused rather than guessed.
	before = e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub},
	}), 400, "invalid_request")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), nil), 200)
}

// TestF01JWKSOutageAfterRotationIsUnavailable: a token signed with a key the
// cache does not hold, while the provider's JWKS is down, is an outage
// (503), not an invalid token; once the JWKS answers again it verifies.
func TestF01JWKSOutageAfterRotationIsUnavailable(t *testing.T) {
	e := newEnvWith(t, envOptions{refetchCooldown: 300 * time.Millisecond})
	e.mustStatus(e.do("GET", "/v1/tasks", e.agent("agent-1"), nil), 200)
	e.agents.Rotate(t, "rsa-2")
	e.agents.SetDown(true)
	time.Sleep(400 * time.Millisecond) // past the cool-down: an unknown kid may refetch
	tok := e.agent("agent-1")
	r := e.do("GET", "/v1/tasks", tok, nil)
	if r.Status != 503 || r.str("code") != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("JWKS down after rotation: %d %s", r.Status, r.Raw)
	}
	e.agents.SetDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = e.do("GET", "/v1/tasks", tok, nil)
		if r.Status == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if r.Status != 200 {
		t.Fatalf("after the JWKS recovered: %d %s", r.Status, r.Raw)
	}
}
