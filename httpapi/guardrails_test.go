package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestA05ApprovalBoundToWhatWasShown: an approval that names the version
// or digest of the task as shown fails with 409 if the task is no longer
// that task.
func TestA05ApprovalBoundToWhatWasShown(t *testing.T) {
	e := newEnv(t)
	id := e.task("agent-1", "alice", "github.repo.read:acme/**")
	shown := e.mustStatus(e.do("GET", "/v1/tasks/"+id, e.user("alice"), nil), 200)
	digest := shown.str("digest")
	if len(digest) != 64 {
		t.Fatalf("digest %q", digest)
	}
	alice := e.user("alice", "eng")
	for name, body := range map[string]any{
		"stale version":  map[string]any{"version": 7},
		"another digest": map[string]any{"digest": strings.Repeat("0", 64)},
	} {
		t.Run(name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			e.refused(before, e.do("POST", "/v1/tasks/"+id+"/approve", alice, body), 409, "task_changed")
		})
	}
	e.t = t
	r := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", alice, map[string]any{"digest": digest, "version": 1}), 200)
	if r.str("status") != "approved" || r.str("digest") == digest {
		t.Fatalf("approve with the shown digest: %s", r.Raw)
	}
}

// TestA07PendingTaskCapPerAgent: an agent cannot flood its users with
// approvals; the cap frees up when a task is decided.
func TestA07PendingTaskCapPerAgent(t *testing.T) {
	e := newEnvWith(t, envOptions{maxPending: 3})
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.task("flooder", "alice", "github.repo.read:acme/**"))
	}
	before := e.snapshot()
	e.refused(before, e.do("POST", "/v1/tasks", e.agent("flooder"), map[string]any{
		"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub},
	}), 429, "rate_limited")
	e.task("another-agent", "alice", "github.repo.read:acme/**") // others are unaffected
	e.mustStatus(e.do("POST", "/v1/tasks/"+ids[0]+"/deny", e.user("alice"), nil), 200)
	e.task("flooder", "alice", "github.repo.read:acme/**")
}

// TestN03RateLimitPerPrincipal: a principal over its rate gets 429 with
// Retry-After; rotating X-Forwarded-For does not reset its bucket; other
// principals are unaffected; throttled requests do not flood the audit log.
func TestN03RateLimitPerPrincipal(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: RateLimits{PerPrincipal: 2}})
	tok := e.agent("chatty")
	for i := 0; i < 4; i++ { // the burst
		e.mustStatus(e.do("GET", "/v1/tasks", tok, nil), 200)
	}
	before := e.snapshot()
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.0.0.%d", i))
		req.Header.Set("X-Real-IP", fmt.Sprintf("10.0.1.%d", i))
		r := e.send(req, nil)
		if r.Status != 429 || r.str("code") != "rate_limited" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("request %d over the limit: %d %s", i, r.Status, r.Raw)
		}
	}
	if after := e.snapshot(); after != before {
		t.Fatal("throttled requests wrote to the store or the audit chain")
	}
	e.mustStatus(e.do("GET", "/v1/tasks", e.agent("quiet"), nil), 200)
}

// TestN03RateLimitPerAddress: before authentication, one peer address is
// limited whatever tokens and forwarding headers it sends — so garbage
// tokens cannot flood the audit log.
func TestN03RateLimitPerAddress(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: RateLimits{PerAddress: 2}})
	statuses := map[int]int{}
	before := e.snapshot()
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
		req.Header.Set("Authorization", fmt.Sprintf("Bearer garbage-%d", i))
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", i))
		statuses[e.send(req, nil).Status]++
	}
	if statuses[401] > 5 || statuses[429] < 5 {
		t.Fatalf("statuses %v: want the burst of 4 (plus refill) answered 401 and the rest 429", statuses)
	}
	// The 401s of garbage tokens are counted, then chained as one summary
	// of their source (H03); the 429s are not audited at all.
	if grew := e.snapshot().auditSeq - before.auditSeq; grew != 0 {
		t.Fatalf("audit grew by %d before the summary", grew)
	}
	if err := e.api.FlushRefusalSummaries(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sums := summaries(t, e.newEvents(before.auditSeq)); len(sums) != 1 || sums[0].Count != int64(statuses[401]) {
		t.Fatalf("summaries %+v for %d refusals", sums, statuses[401])
	}
	// Health and discovery are not behind the v1 limiter.
	e.mustStatus(e.do("GET", "/healthz", "", nil), 200)
}

// TestF04IdempotentMint: retries with the same Idempotency-Key and body
// return the same credential (the very same EdDSA token), never two live
// credentials, even when the retries race.
func TestF04IdempotentMint(t *testing.T) {
	e := newEnv(t)
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	body := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
	mint := func(key string, b any) resp {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", strings.NewReader(mustJSON(t, b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.agent("agent-1"))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		return e.send(req, []byte(mustJSON(t, b)))
	}
	first := e.mustStatus(mint("op-1", body), 201)
	again := e.mustStatus(mint("op-1", body), 201)
	if again.str("jti") != first.str("jti") || again.str("access_token") != first.str("access_token") ||
		again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry returned another credential:\n%s\n%s", first.Raw, again.Raw)
	}
	var wg sync.WaitGroup
	jtis := make(chan string, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mint("op-2", body)
			if r.Status == 201 {
				jtis <- r.str("jti")
			} else {
				t.Errorf("racing retry: %d %s", r.Status, r.Raw)
			}
		}()
	}
	wg.Wait()
	close(jtis)
	seen := map[string]bool{}
	for j := range jtis {
		seen[j] = true
	}
	if len(seen) != 1 {
		t.Fatalf("racing retries minted %d credentials", len(seen))
	}
	var n int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM credentials WHERE task_id = $1`, id).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d credential rows for two keys, %v", n, err)
	}
	before := e.snapshot()
	other := map[string]any{"scopes": []string{"github.repo.read:acme/web"}, "audience": apiGitHub}
	e.refused(before, mint("op-1", other), 409, "idempotency_conflict")
	before = e.snapshot()
	e.refused(before, mint("bad key with spaces", body), 400, "invalid_request")
	// After close, a retry does not bring the credential back.
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), 200)
	before = e.snapshot()
	e.refused(before, mint("op-1", body), 409, "task_not_active")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := jsonMarshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestN02HeaderCapAndSlowClients runs the real http.Server configuration:
// headers over 8 KiB get 431, and a client that dribbles its headers is
// cut off at ReadHeaderTimeout while other clients are served.
func TestN02HeaderCapAndSlowClients(t *testing.T) {
	e := newEnv(t)
	srv := NewHTTPServer("127.0.0.1:0", e.api)
	if srv.ReadHeaderTimeout == 0 || srv.ReadHeaderTimeout > 5*time.Second || srv.ReadTimeout == 0 ||
		srv.WriteTimeout == 0 || srv.IdleTimeout == 0 {
		t.Fatalf("timeouts not set: %+v", srv)
	}
	srv.ReadHeaderTimeout = 300 * time.Millisecond // the same mechanism, faster
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()

	req, _ := http.NewRequest("GET", base+"/v1/tasks", nil)
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("A", 9<<10))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("9 KiB Authorization: %d, want 431", res.StatusCode)
	}

	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprint(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	res, err = http.Get(base + "/healthz") // another client, meanwhile
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("other client during a slow one: %v %v", res, err)
	}
	res.Body.Close()
	time.Sleep(600 * time.Millisecond)
	fmt.Fprint(slow, "X-Late: 1\r\n\r\n")
	_ = slow.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(slow).ReadString('\n')
	if err == nil && strings.Contains(line, "200") {
		t.Fatalf("a client slower than ReadHeaderTimeout was served: %q", line)
	}
}

// TestF07OneTimeSource: a replica whose clock is ten minutes off still
// decides expiry on the database's clock: it cannot mint after a task
// expired, and its tokens carry the database's time.
func TestF07OneTimeSource(t *testing.T) {
	for name, skew := range map[string]time.Duration{"slow replica": -10 * time.Minute, "fast replica": 10 * time.Minute} {
		t.Run(name, func(t *testing.T) {
			e := newEnvWith(t, envOptions{replicaClock: func() time.Time { return time.Now().Add(skew) }})
			id := e.task("agent-1", "alice", "github.repo.read:acme/**")
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{"ttl_seconds": 2}), 200)
			m := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
			if n := m.JSON["expires_in"].(float64); n > 2 || n < 1 {
				t.Fatalf("expires_in %v: the token's life was not taken from the database clock", n)
			}
			in := e.mustStatus(e.introspect(e.resource("rs"), m.str("access_token")), 200)
			if iat := int64(in.JSON["iat"].(float64)); iat < time.Now().Add(-time.Minute).Unix() || iat > time.Now().Add(time.Minute).Unix() {
				t.Fatalf("iat %d is not the database's time", iat)
			}
			time.Sleep(2100 * time.Millisecond)
			before := e.snapshot()
			e.refused(before, e.mint("agent-1", id, "github.repo.read:acme/api"), 409, "task_not_active")
			if r := e.introspect(e.resource("rs"), m.str("access_token")); r.JSON["active"] != false {
				t.Fatalf("token of an expired task is active: %s", r.Raw)
			}
		})
	}
}
