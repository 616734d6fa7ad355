package resource

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/dpop"
	"github.com/errandhq/errand/internal/testing/errandtest"
	"github.com/errandhq/errand/internal/testing/testpg"
)

func TestMain(m *testing.M) { os.Exit(testpg.Run(m)) }

// idToken is a Credential of a fixed token source: the test issuer's
// tokens live long enough for a test.
type idToken func() string

func (f idToken) Token(context.Context) (string, error) { return f(), nil }

// call sends a JSON request to Errand and decodes the answer.
func call(t testing.TB, method, url, token string, body any, hdr ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// approvedTask creates a task for agent bot on behalf of alice with the
// eng grant and approves it.
func approvedTask(t testing.TB, e *errandtest.Errand, scopes ...string) string {
	t.Helper()
	code, task := call(t, "POST", e.URL+"/v1/tasks", e.Agent(t, "bot"), map[string]any{
		"on_behalf_of": "alice", "goal": "fix the build", "scopes": scopes,
		"audiences": []string{errandtest.API}, "ttl_seconds": 3600,
	})
	if code != http.StatusCreated {
		t.Fatalf("create task: %d %v", code, task)
	}
	id := task["id"].(string)
	if code, out := call(t, "POST", e.URL+"/v1/tasks/"+id+"/approve", e.User(t, "alice", errandtest.Group), map[string]any{}); code != http.StatusOK {
		t.Fatalf("approve: %d %v", code, out)
	}
	return id
}

// mint mints a token of the task for the API; with key, DPoP-bound.
func mint(t testing.TB, e *errandtest.Errand, task string, ttl int, key crypto.Signer, scopes ...string) string {
	t.Helper()
	url := e.URL + "/v1/tasks/" + task + "/tokens"
	var hdr []string
	if key != nil {
		proof, err := dpop.NewProof(key, "POST", url, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		hdr = []string{"DPoP", proof}
	}
	code, out := call(t, "POST", url, e.Agent(t, "bot"), map[string]any{
		"scopes": scopes, "audience": errandtest.API, "ttl_seconds": ttl,
	}, hdr...)
	if code != http.StatusCreated {
		t.Fatalf("mint: %d %v", code, out)
	}
	return out["access_token"].(string)
}

func closeTask(t testing.TB, e *errandtest.Errand, task string) {
	t.Helper()
	if code, out := call(t, "POST", e.URL+"/v1/tasks/"+task+"/close", e.Agent(t, "bot"), map[string]any{}); code != http.StatusOK {
		t.Fatalf("close: %d %v", code, out)
	}
}

// newVerifier returns a running Verifier of the API at e (or at errandURL
// when given), current once Ready.
func newVerifier(t testing.TB, e *errandtest.Errand, tune func(*Config), errandURL ...string) *Verifier {
	t.Helper()
	cfg := Config{
		Issuer: e.URL, Audience: errandtest.API,
		Credential: idToken(func() string { return e.Resource(t, errandtest.RS) }),
	}
	if len(errandURL) > 0 {
		cfg.ErrandURL = errandURL[0]
	}
	if tune != nil {
		tune(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return v
}

func ready(t testing.TB, v *Verifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.Ready(ctx); err != nil {
		t.Fatal("the verifier never read the feed:", err)
	}
}

// serve sends a request with the token through h and returns the answer.
func serve(h http.Handler, method, path, auth string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "https://api.example.test"+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// ok is the handler behind the middleware.
var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	t, found := FromContext(r.Context())
	if !found {
		http.Error(w, "no token in context", 500)
		return
	}
	_, _ = io.WriteString(w, "hello "+t.Subject)
})

// within polls cond every 10 ms for at most d and reports how long it took.
func within(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start), true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), cond()
}

func challenge(rec *httptest.ResponseRecorder) string { return rec.Header().Get("WWW-Authenticate") }

func hasAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
