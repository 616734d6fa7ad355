package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/issuer/jwt"
)

// TestR09ReplayAfterKeyRetirementIsTheSameCredential pins what an
// Idempotency-Key replay promises once the key that signed the original
// has been rotated out and retired: the same credential (jti, scope,
// audience, expiry, one record), signed by the current key, so it
// verifies; not the same bytes, which no key could verify any more. The
// original token is dead (its key is retired) and the replay is not a new
// credential: closing the task kills both.
func TestR09ReplayAfterKeyRetirementIsTheSameCredential(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.approved("r09-agent", "alice", "github.repo.read:acme/**")
	raw := []byte(`{"scopes":["github.repo.read:acme/api"],"audience":"` + apiGitHub + `"}`)
	mint := func() resp {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", strings.NewReader(string(raw)))
		req.Header.Set("Authorization", "Bearer "+e.agent("r09-agent"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "r09")
		return e.send(req, raw)
	}
	first := e.mustStatus(mint(), http.StatusCreated)
	oldKID := kidOf(t, first.str("access_token"))

	ops := broker.Actor{Kind: "operator", Subject: "r09"}
	if _, err := e.tokens.Rotate(ctx, jwt.KeyPolicy{Overlap: time.Hour}, ops, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tokens.Retire(ctx, oldKID, ops); err != nil {
		t.Fatal(err)
	}
	rs := e.resource("rs")
	if in := e.introspect(rs, first.str("access_token")); in.JSON["active"] != false {
		t.Fatalf("a token of a retired key is active: %s", in.Raw)
	}

	again := e.mustStatus(mint(), http.StatusCreated)
	if again.Header.Get("Idempotent-Replayed") != "true" || again.str("jti") != first.str("jti") ||
		again.str("scope") != first.str("scope") || again.JSON["expires_in"].(float64) > first.JSON["expires_in"].(float64) {
		t.Fatalf("the replay is not the same credential:\n%s\n%s", first.Raw, again.Raw)
	}
	if kid := kidOf(t, again.str("access_token")); kid == oldKID {
		t.Fatal("the replay was signed by the retired key")
	}
	if in := e.introspect(rs, again.str("access_token")); in.JSON["active"] != true || in.str("jti") != first.str("jti") {
		t.Fatalf("the replayed token: %s", in.Raw)
	}
	var n int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM credentials WHERE task_id = $1`, id).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d credential rows (%v), want the one", n, err)
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("r09-agent"), nil), http.StatusOK)
	if in := e.introspect(rs, again.str("access_token")); in.JSON["active"] != false {
		t.Fatalf("the replayed token outlived its task: %s", in.Raw)
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.KID
}
