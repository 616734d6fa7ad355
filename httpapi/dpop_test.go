package httpapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/dpop"
	"github.com/errandhq/errand/dpop/dpoptest"
)

func dpopKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mintPath(id string) string { return "/v1/tasks/" + id + "/tokens" }

// proofFor is a valid proof by key for a mint of task id: htu is Errand's
// public URL, not the address the test server listens on.
func proofFor(t testing.TB, key crypto.Signer, id string) string {
	t.Helper()
	p, err := dpop.NewProof(key, http.MethodPost, publicURL+mintPath(id), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mintWith mints for agent-1 with the given DPoP header values (none: a
// bearer mint) and extra headers.
func (e *env) mintWith(id string, body map[string]any, proofs []string, headers map[string]string) resp {
	e.t.Helper()
	if body == nil {
		body = map[string]any{"scopes": []string{"github.repo.read:acme/app"}, "audience": apiGitHub}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+mintPath(id), bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.agent("agent-1"))
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return e.send(req, raw)
}

// jktOf is the thumbprint of key, as cnf.jkt writes it.
func jktOf(t testing.TB, key crypto.Signer) string {
	t.Helper()
	jkt, err := dpop.KeyThumbprint(key)
	if err != nil {
		t.Fatal(err)
	}
	return jkt
}

// tokenClaims decodes a JWT's payload without verifying it.
func tokenClaims(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A valid proof binds the token: cnf.jkt in the JWT, token_type DPoP, the
// key recorded with the credential and in its audit event, and
// introspection answering the recorded key.
func TestX05BoundTokenIntrospectedShowsCnfJKT(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	key := dpopKey(t)
	jkt := jktOf(t, key)
	r := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, key, id)}, nil), http.StatusCreated)
	if r.str("token_type") != "DPoP" {
		t.Fatalf("token_type %q, want DPoP", r.str("token_type"))
	}
	cnf, _ := tokenClaims(t, r.str("access_token"))["cnf"].(map[string]any)
	if cnf["jkt"] != jkt {
		t.Fatalf("token cnf %v, want jkt %s", cnf, jkt)
	}
	c, err := e.st.Credential(context.Background(), r.str("jti"))
	if err != nil || c.JKT != jkt {
		t.Fatalf("recorded jkt %q (%v), want %s", c.JKT, err, jkt)
	}
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{TaskID: id, Type: broker.EventCredentialIssued, Limit: 10})
	if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Detail), `"jkt":"`+jkt+`"`) {
		t.Fatalf("issued event %v %v, want one naming jkt", evs, err)
	}
	in := e.mustStatus(e.introspect(e.resource("rs"), r.str("access_token")), http.StatusOK)
	icnf, _ := in.JSON["cnf"].(map[string]any)
	if in.JSON["active"] != true || in.str("token_type") != "DPoP" || icnf["jkt"] != jkt {
		t.Fatalf("introspection %s, want active, DPoP, cnf.jkt %s", in.Raw, jkt)
	}

	// A bearer token of the same task stays a bearer token.
	b := e.mustStatus(e.mintWith(id, nil, nil, nil), http.StatusCreated)
	if b.str("token_type") != "Bearer" || tokenClaims(t, b.str("access_token"))["cnf"] != nil {
		t.Fatalf("bearer mint %s", b.Raw)
	}
	bi := e.mustStatus(e.introspect(e.resource("rs"), b.str("access_token")), http.StatusOK)
	if bi.str("token_type") != "Bearer" || bi.JSON["cnf"] != nil {
		t.Fatalf("bearer introspection %s", bi.Raw)
	}
}

// Introspection answers from the record: a token signed with Errand's
// own key (a stolen one) that drops or changes the binding of a recorded
// bound credential is not active.
func TestX05IntrospectionComparesTheRecordedKey(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	key := dpopKey(t)
	r := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, key, id)}, nil), http.StatusCreated)
	at, err := e.tokens.Verify(context.Background(), r.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	for name, jkt := range map[string]string{"unbound": "", "another key": jktOf(t, dpopKey(t))} {
		t.Run(name, func(t *testing.T) {
			forged := at
			forged.JKT = jkt
			tok, err := e.tokens.Sign(context.Background(), forged)
			if err != nil {
				t.Fatal(err)
			}
			in := e.mustStatus(e.introspect(e.resource("rs"), tok), http.StatusOK)
			if in.JSON["active"] != false || len(in.JSON) != 1 {
				t.Fatalf("forged binding introspected %s, want {\"active\":false}", in.Raw)
			}
		})
	}
}

func TestX05ReplayedProofRefused(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	proof := proofFor(t, dpopKey(t), id)
	e.mustStatus(e.mintWith(id, nil, []string{proof}, nil), http.StatusCreated)
	before := e.snapshot()
	e.refused(before, e.mintWith(id, nil, []string{proof}, nil), http.StatusBadRequest, "invalid_dpop_proof")
}

// The replay cache is the store's: a proof used at one replica is refused
// at another.
func TestX05ReplayedProofRefusedAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	r2 := e.replica()
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	proof := proofFor(t, dpopKey(t), id)
	e.mustStatus(e.mintWith(id, nil, []string{proof}, nil), http.StatusCreated)
	before := r2.snapshot()
	r2.refused(before, r2.mintWith(id, nil, []string{proof}, nil), http.StatusBadRequest, "invalid_dpop_proof")
}

// Every defective proof is refused, audited once, and changes nothing.
func TestX05InvalidProofsRefused(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	other := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	key := dpopKey(t)
	sign := func(method, url string, iat time.Time) string {
		p, err := dpop.NewProof(key, method, url, "", iat)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	claims := func() map[string]any {
		return map[string]any{"jti": "x05-" + strings.Repeat("z", 8), "htm": "POST",
			"htu": publicURL + mintPath(id), "iat": time.Now().Unix()}
	}
	pub := dpoptest.JWK(t, key.Public())
	secret := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name   string
		proofs []string
	}{
		{"wrong htm", []string{sign(http.MethodGet, publicURL+mintPath(id), time.Now())}},
		{"wrong htu: another task", []string{sign(http.MethodPost, publicURL+mintPath(other), time.Now())}},
		// The Host header names the test server; the proof must name Errand's public URL.
		{"wrong htu: the Host header's", []string{sign(http.MethodPost, e.srv.URL+mintPath(id), time.Now())}},
		{"stale iat", []string{sign(http.MethodPost, publicURL+mintPath(id), time.Now().Add(-5*time.Minute))}},
		{"future iat", []string{sign(http.MethodPost, publicURL+mintPath(id), time.Now().Add(5*time.Minute))}},
		{"typ not dpop+jwt", []string{dpoptest.Compact(t, map[string]any{"typ": "JWT", "alg": "ES256", "jwk": pub}, claims(), dpoptest.ES256(key))}},
		{"private key in jwk", []string{dpoptest.Compact(t, map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": dpoptest.JWK(t, key)}, claims(), dpoptest.ES256(key))}},
		{"symmetric alg HS256", []string{dpoptest.Compact(t, map[string]any{"typ": "dpop+jwt", "alg": "HS256",
			"jwk": map[string]any{"kty": "oct", "k": base64.RawURLEncoding.EncodeToString(secret)}}, claims(),
			func(in []byte) []byte { m := hmac.New(sha256.New, secret); m.Write(in); return m.Sum(nil) })}},
		{"alg none", []string{dpoptest.Compact(t, map[string]any{"typ": "dpop+jwt", "alg": "none", "jwk": pub}, claims(),
			func([]byte) []byte { return nil })}},
		{"signed by another key", []string{dpoptest.Compact(t, map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": pub}, claims(), dpoptest.ES256(dpopKey(t)))}},
		{"two DPoP headers", []string{sign(http.MethodPost, publicURL+mintPath(id), time.Now()), sign(http.MethodPost, publicURL+mintPath(id), time.Now())}},
		{"empty", []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			e.refused(before, e.mintWith(id, nil, tc.proofs, nil), http.StatusBadRequest, "invalid_dpop_proof")
		})
	}
}

// A task created with require_dpop shows it, and refuses a bearer mint,
// on the slow path and on the fast one alike (a bound mint first leaves
// the task's snapshot for the fast path).
func TestX05RequireDPoPRefusesBearerMint(t *testing.T) {
	e := newEnv(t)
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "triage issues", "scopes": []string{"github.repo.read:acme/**"},
		"audiences": []string{apiGitHub}, "require_dpop": true,
	}), http.StatusCreated)
	id := r.str("id")
	if r.JSON["require_dpop"] != true {
		t.Fatalf("task %s, want require_dpop true", r.Raw)
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	if g := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.agent("agent-1"), nil), http.StatusOK); g.JSON["require_dpop"] != true {
		t.Fatalf("task %s, want require_dpop kept", g.Raw)
	}
	before := e.snapshot()
	e.refused(before, e.mintWith(id, nil, nil, nil), http.StatusBadRequest, "dpop_required")

	b := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, dpopKey(t), id)}, nil), http.StatusCreated)
	if b.str("token_type") != "DPoP" {
		t.Fatalf("bound mint %s", b.Raw)
	}
	before = e.snapshot()
	e.refused(before, e.mintWith(id, nil, nil, nil), http.StatusBadRequest, "dpop_required")

	// A task without the field requires nothing.
	plain := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	if g := e.mustStatus(e.do("GET", "/v1/tasks/"+plain, e.agent("agent-1"), nil), http.StatusOK); g.JSON["require_dpop"] != false {
		t.Fatalf("task %s, want require_dpop false", g.Raw)
	}
}

// A policy may require DPoP through context.dpop: a bearer mint it denies
// only for want of a proof is refused as dpop_required, naming it.
func TestX05PolicyRequiresDPoP(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dpop.cedar"), []byte(`
@id("allow-agents")
permit (principal is Agent, action, resource);
@id("dpop-for-writes")
forbid (principal, action, resource)
when { context.operation == "mint" && context.class == "write" && !context.dpop };
@id("enforce-bound-reads")
forbid (principal, action, resource)
when { context.operation == "evaluate" && context.class == "read" && !context.dpop };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{policies: []string{filepath.Join(dir, "*.cedar")}, schema: "testdata/schema.cedarschema"})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**", "github.pr.write:acme/**")
	write := map[string]any{"scopes": []string{"github.pr.write:acme/app"}, "audience": apiGitHub}

	before := e.snapshot()
	r := e.mintWith(id, write, nil, nil)
	e.refused(before, r, http.StatusBadRequest, "dpop_required")
	if ps, _ := r.JSON["policies"].([]any); len(ps) != 1 || ps[0] != "dpop-for-writes" {
		t.Fatalf("refusal %s, want it to name dpop-for-writes", r.Raw)
	}
	e.mustStatus(e.mintWith(id, write, []string{proofFor(t, dpopKey(t), id)}, nil), http.StatusCreated)
	// Reads need no proof to be minted; an enforcement point asking
	// (AuthZEN) sees context.dpop true only for a bound token.
	bearer := e.mustStatus(e.mintWith(id, nil, nil, nil), http.StatusCreated).str("access_token")
	bound := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, dpopKey(t), id)}, nil), http.StatusCreated).str("access_token")
	for tok, want := range map[string]bool{bearer: false, bound: true} {
		r := e.mustStatus(e.evaluate(e.resource("rs"), azBody(tok, "github.repo.read", "acme/app", nil)), http.StatusOK)
		if r.JSON["decision"] != want {
			t.Errorf("evaluation of a bound=%v token: %s", want, r.Raw)
		}
	}
}

// An Idempotency-Key retry of a bound mint returns its token only to a
// proof of the same key: another key, or no proof, is refused.
func TestX05IdempotentReplayWithAnotherKeyRefused(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	key := dpopKey(t)
	idem := map[string]string{"Idempotency-Key": "x05-replay"}
	first := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, key, id)}, idem), http.StatusCreated)
	again := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, key, id)}, idem), http.StatusCreated)
	if again.str("jti") != first.str("jti") || again.Header.Get("Idempotent-Replayed") != "true" || again.str("token_type") != "DPoP" {
		t.Fatalf("replay with the same key %s, want the first credential", again.Raw)
	}
	for name, proofs := range map[string][]string{
		"another key": {proofFor(t, dpopKey(t), id)},
		"no proof":    nil,
	} {
		t.Run(name, func(t *testing.T) {
			before := e.snapshot()
			e.refused(before, e.mintWith(id, nil, proofs, idem), http.StatusConflict, "idempotency_conflict")
		})
	}
	// And a bearer mint's key is not taken over by a proof.
	bearer := map[string]string{"Idempotency-Key": "x05-bearer"}
	e.mustStatus(e.mintWith(id, nil, nil, bearer), http.StatusCreated)
	before := e.snapshot()
	e.refused(before, e.mintWith(id, nil, []string{proofFor(t, key, id)}, bearer), http.StatusConflict, "idempotency_conflict")
}

// The metadata lists the proof algorithms, ES256 among them.
func TestX05MetadataListsDPoPAlgorithms(t *testing.T) {
	e := newEnv(t)
	r := e.mustStatus(e.do("GET", "/.well-known/oauth-authorization-server", "", nil), http.StatusOK)
	algs, _ := r.JSON["dpop_signing_alg_values_supported"].([]any)
	found := false
	for _, a := range algs {
		if a == "HS256" || a == "none" {
			t.Fatalf("metadata lists %v", a)
		}
		found = found || a == "ES256"
	}
	if !found {
		t.Fatalf("dpop_signing_alg_values_supported %v, want ES256", algs)
	}
}

// A resource server checks a bound token's proof with the package's
// VerifyBound and the introspected cnf.jkt: the holder's proof passes,
// another key's does not.
func TestX05ResourceServerChecksTheBinding(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	key := dpopKey(t)
	tok := e.mustStatus(e.mintWith(id, nil, []string{proofFor(t, key, id)}, nil), http.StatusCreated).str("access_token")
	in := e.mustStatus(e.introspect(e.resource("rs"), tok), http.StatusOK)
	jkt, _ := in.JSON["cnf"].(map[string]any)["jkt"].(string)
	rs, err := dpop.New(dpop.Config{Replay: dpopReplay{svc: e.svc}})
	if err != nil {
		t.Fatal(err)
	}
	req := dpop.Request{Method: http.MethodGet, URL: apiGitHub + "/repos/acme/app", AccessToken: tok}
	good, _ := dpop.NewProof(key, req.Method, req.URL, tok, time.Now())
	if _, err := rs.VerifyBound(context.Background(), good, req, jkt); err != nil {
		t.Fatal(err)
	}
	stolen, _ := dpop.NewProof(dpopKey(t), req.Method, req.URL, tok, time.Now())
	if _, err := rs.VerifyBound(context.Background(), stolen, req, jkt); err == nil {
		t.Fatal("a proof of another key was accepted for a bound token")
	}
}

// With server nonces required, a proof without one is refused as
// use_dpop_nonce with a nonce in DPoP-Nonce, audited once; a proof
// carrying it is accepted, at any replica deriving the same key.
func TestX05ServerNonceRequired(t *testing.T) {
	e := newEnvWith(t, envOptions{dpopNonceEvery: time.Minute})
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	key := dpopKey(t)
	before := e.snapshot()
	r := e.mintWith(id, nil, []string{proofFor(t, key, id)}, nil)
	e.refused(before, r, http.StatusBadRequest, "use_dpop_nonce")
	nonce := r.Header.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatalf("use_dpop_nonce without a DPoP-Nonce header: %v", r.Header)
	}
	withNonce := func(n string) string {
		p, err := dpop.NewProofWithNonce(key, http.MethodPost, publicURL+mintPath(id), "", n, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := e.mustStatus(e.mintWith(id, nil, []string{withNonce(nonce)}, nil), http.StatusCreated)
	if ok.str("token_type") != "DPoP" || ok.Header.Get("DPoP-Nonce") == "" {
		t.Fatalf("mint with the nonce: %s %v", ok.Raw, ok.Header)
	}
	before = e.snapshot()
	e.refused(before, e.mintWith(id, nil, []string{withNonce("bm90LWEtbm9uY2Utb2YtZXJyYW5kcy0xMjM0NTY")}, nil),
		http.StatusBadRequest, "use_dpop_nonce")
}

// formDPoP posts a form to the OAuth front door with DPoP headers.
func (e *env) formDPoP(path string, v url.Values, proofs ...string) resp {
	e.t.Helper()
	body := v.Encode()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	return e.send(req, []byte(body))
}

// tokenProof is a proof by key for the token endpoint.
func tokenProof(t testing.TB, key crypto.Signer) string {
	t.Helper()
	p, err := dpop.NewProof(key, http.MethodPost, publicURL+"/oauth/token", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The token endpoint binds as the REST mint does: an RFC 8693 exchange
// with a proof answers token_type DPoP and a token with cnf.jkt, which
// introspection shows; a replayed proof is invalid_dpop_proof; a task
// requiring DPoP refuses an exchange without one.
func TestX05TokenExchangeBindsTheToken(t *testing.T) {
	e := newEnv(t)
	id := e.approved("bot", "alice", readAcme)
	key := dpopKey(t)
	proof := tokenProof(t, key)
	r := e.mustStatus(e.formDPoP("/oauth/token", e.exchangeForm("bot", id, url.Values{"resource": {apiGitHub}}), proof), http.StatusOK)
	if r.str("token_type") != "DPoP" {
		t.Fatalf("token_type %q, want DPoP: %s", r.str("token_type"), r.Raw)
	}
	if cnf, _ := tokenClaims(t, r.str("access_token"))["cnf"].(map[string]any); cnf["jkt"] != jktOf(t, key) {
		t.Fatalf("cnf %v, want jkt %s", cnf, jktOf(t, key))
	}
	in := e.mustStatus(e.introspect(e.resource("rs"), r.str("access_token")), http.StatusOK)
	if cnf, _ := in.JSON["cnf"].(map[string]any); in.str("token_type") != "DPoP" || cnf["jkt"] != jktOf(t, key) {
		t.Fatalf("introspection %s", in.Raw)
	}

	before := e.snapshot()
	e.oauthRefused(before, e.formDPoP("/oauth/token", e.exchangeForm("bot", id, url.Values{"resource": {apiGitHub}}), proof),
		http.StatusBadRequest, "invalid_dpop_proof", "invalid_dpop_proof")
	before = e.snapshot()
	wrongURL, _ := dpop.NewProof(key, http.MethodPost, publicURL+"/v1/tasks/"+id+"/tokens", "", time.Now())
	e.oauthRefused(before, e.formDPoP("/oauth/token", e.exchangeForm("bot", id, url.Values{"resource": {apiGitHub}}), wrongURL),
		http.StatusBadRequest, "invalid_dpop_proof", "invalid_dpop_proof")

	strict := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("bot"), map[string]any{
		"on_behalf_of": "alice", "goal": "triage issues", "scopes": []string{readAcme},
		"audiences": []string{apiGitHub}, "require_dpop": true,
	}), http.StatusCreated).str("id")
	e.mustStatus(e.do("POST", "/v1/tasks/"+strict+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	before = e.snapshot()
	e.oauthRefused(before, e.formDPoP("/oauth/token", e.exchangeForm("bot", strict, nil)),
		http.StatusBadRequest, "invalid_dpop_proof", "dpop_required")
	if b := e.mustStatus(e.formDPoP("/oauth/token", e.exchangeForm("bot", strict, nil), tokenProof(t, key)), http.StatusOK); b.str("token_type") != "DPoP" {
		t.Fatalf("bound exchange of a strict task: %s", b.Raw)
	}
}

// A CIBA poll with a proof receives the token bound to its key.
func TestX05CIBAPollBindsTheToken(t *testing.T) {
	e := newEnv(t)
	ar := e.mustStatus(e.backchannel("bot", url.Values{"login_hint": {"alice"}, "scope": {readAcme},
		"resource": {apiGitHub}, "binding_message": {"bind it"}}), http.StatusOK).str("auth_req_id")
	id := e.pendingTask("alice")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	key := dpopKey(t)
	poll := asClient(e.agent("bot"), url.Values{"grant_type": {grantCIBA}, "auth_req_id": {ar}})
	r := e.mustStatus(e.formDPoP("/oauth/token", poll, tokenProof(t, key)), http.StatusOK)
	if cnf, _ := tokenClaims(t, r.str("access_token"))["cnf"].(map[string]any); r.str("token_type") != "DPoP" || cnf["jkt"] != jktOf(t, key) {
		t.Fatalf("CIBA token %s, want bound to %s", r.Raw, jktOf(t, key))
	}
}

// TestX05ReplayRefusedOnAReplicaWhoseClockLags: a replica whose clock is
// 90 s behind the database's still finds a proof fresh after the proof's
// window has passed by the database's clock. The replay cache keeps each
// identifier ReplaySkew past the expiry the replica asked for, so the
// second use is refused there too. Before, the entry was written already
// expired (by the database's clock) and the same proof was accepted twice.
func TestX05ReplayRefusedOnAReplicaWhoseClockLags(t *testing.T) {
	e := newEnv(t)
	lag := 90 * time.Second
	v, err := dpop.New(dpop.Config{Replay: dpopReplay{svc: e.svc}, Now: func() time.Time { return time.Now().Add(-lag) }})
	if err != nil {
		t.Fatal(err)
	}
	url := publicURL + "/oauth/token"
	proof, err := dpop.NewProof(dpopKey(t), http.MethodPost, url, "", time.Now().Add(-lag))
	if err != nil {
		t.Fatal(err)
	}
	req := dpop.Request{Method: http.MethodPost, URL: url}
	if _, err := v.Verify(context.Background(), proof, req); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, err := v.Verify(context.Background(), proof, req); !errors.Is(err, dpop.ErrInvalidProof) {
		t.Fatalf("second use on the lagging replica: %v, want a refusal", err)
	}
}
