package httpapi

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/revocation"
)

// BenchmarkMint measures the whole mint path over HTTP on loopback: OIDC
// verification of the agent, the task row lock, the credential row and its
// audit event committed durably in PostgreSQL, EdDSA signing.
//
//	ERRAND_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//	  go test ./httpapi -run '^$' -bench 'Mint|Introspect' -benchtime 3s
func BenchmarkMint(b *testing.B) {
	e := newEnv(b)
	e.bench = true
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	tok := e.agent("agent-1")
	body := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
	b.SetParallelism(8) // 16 concurrent clients on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := e.do("POST", "/v1/tasks/"+id+"/tokens", tok, body); r.Status != http.StatusCreated {
				b.Errorf("mint: %d %s", r.Status, r.Raw)
				return
			}
		}
	})
}

// BenchmarkIntrospect measures introspection of an active token: OIDC
// verification of the resource server, EdDSA verification, two primary-key
// reads.
func BenchmarkIntrospect(b *testing.B) {
	e := newEnv(b)
	e.bench = true
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	rs := e.resource("rs")
	b.SetParallelism(8) // 16 concurrent clients on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := e.introspect(rs, at); r.JSON["active"] != true {
				b.Errorf("introspect: %s", r.Raw)
				return
			}
		}
	})
}

// BenchmarkMintManyTasks mints on 16 tasks at once, so that only the audit
// chain head (not one task's row lock) serialises the commits.
func BenchmarkMintManyTasks(b *testing.B) {
	e := newEnv(b)
	e.bench = true
	ids := make(chan string, 64)
	for i := 0; i < 16; i++ {
		ids <- e.approved("agent-1", "alice", "github.repo.read:acme/**")
	}
	tok := e.agent("agent-1")
	body := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := <-ids
		for pb.Next() {
			if r := e.do("POST", "/v1/tasks/"+id+"/tokens", tok, body); r.Status != http.StatusCreated {
				b.Errorf("mint: %d %s", r.Status, r.Raw)
				return
			}
		}
	})
}

// BenchmarkCloseToInactiveOnOtherReplica measures, per task, the time from
// sending a close to replica B until replica A's introspection answers
// active: false (there is no cache: A's first answer after B's commit is
// already inactive, so this is close latency plus one introspection).
func BenchmarkCloseToInactiveOnOtherReplica(b *testing.B) {
	a := newEnv(b)
	a.bench = true
	r := a.replica()
	rs, agentTok := a.resource("rs"), a.agent("agent-1")
	var lat latencies
	for i := 0; i < b.N; i++ {
		id := r.approved("agent-1", "alice", "github.repo.read:acme/**")
		tok := r.mustStatus(r.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
		start := time.Now()
		r.mustStatus(r.do("POST", "/v1/tasks/"+id+"/close", agentTok, nil), 200)
		for a.introspect(rs, tok).JSON["active"] != false {
		}
		lat.add(time.Since(start))
	}
	lat.report(b, "close-to-inactive")
}

// latencies collects the timed part of each iteration. The benchmarks
// below time it themselves: StopTimer/StartTimer read memory statistics,
// which stops the world and would add milliseconds to every iteration.
type latencies []time.Duration

func (l *latencies) add(d time.Duration) { *l = append(*l, d) }

func (l latencies) report(b *testing.B, name string) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(l)), name+"-µs/op")
	b.ReportMetric(float64(l[len(l)/2].Microseconds()), name+"-p50-µs")
	b.ReportMetric(float64(l[len(l)*99/100].Microseconds()), name+"-p99-µs")
}

// BenchmarkClose1000Credentials measures closing a task that holds 1,000
// live access tokens: one transaction revokes them, writes 1,001 audit
// events and 1,000 feed entries.
func BenchmarkClose1000Credentials(b *testing.B) {
	e := newEnv(b)
	e.bench = true
	agent := broker.Principal{Issuer: e.agents.URL, Subject: "agent-1", Kind: broker.KindAgent}
	agentTok := e.agent("agent-1")
	var lat latencies
	for i := 0; i < b.N; i++ {
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		for j := 0; j < 1000; j++ {
			if _, err := e.svc.Mint(context.Background(), agent, id, broker.MintRequest{Scopes: []string{"github.repo.read:acme/api"}, Audience: apiGitHub}); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if r := e.do("POST", "/v1/tasks/"+id+"/close", agentTok, nil); r.JSON["revoked"] != float64(1000) {
			b.Fatalf("close: %s", r.Raw)
		}
		lat.add(time.Since(start))
	}
	lat.report(b, "close-1000")
}

// BenchmarkFeedLatency measures the time from sending a close until a
// resource server's open revocation stream delivers the event, woken by
// PostgreSQL LISTEN/NOTIFY.
func BenchmarkFeedLatency(b *testing.B) {
	hub := &revocation.Hub{Poll: time.Minute}
	e := newEnvWith(b, envOptions{notifier: hub})
	e.bench = true
	hub.Listen = e.st.Listen
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go hub.Run(ctx)
	time.Sleep(200 * time.Millisecond) // LISTEN established
	tail := e.mustStatus(e.do("GET", "/v1/revocations?limit=1", e.resource("rs"), nil), 200).str("next_cursor")
	for page := e.do("GET", "/v1/revocations?limit=1000&since="+tail, e.resource("rs"), nil); len(page.JSON["revocations"].([]any)) > 0; page = e.do("GET", "/v1/revocations?limit=1000&since="+tail, e.resource("rs"), nil) {
		tail = page.str("next_cursor")
	}
	ch, stop := e.openStream(b, tail)
	defer stop()
	agentTok := e.agent("agent-1")
	var lat, closeOnly latencies
	for i := 0; i < b.N; i++ {
		id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
		e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201)
		start := time.Now()
		e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", agentTok, nil), 200)
		closeOnly.add(time.Since(start))
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			b.Fatal("no event")
		}
		lat.add(time.Since(start))
	}
	closeOnly.report(b, "close")
	lat.report(b, "close-to-stream-event")
}

// BenchmarkAuthZENEvaluation measures one AuthZEN decision: OIDC
// verification of the resource server, EdDSA verification of the token,
// the credential and task reads of introspection, the scope check and the
// Cedar policies of testdata/policies.
//
//	ERRAND_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//	  go test ./httpapi -run '^$' -bench AuthZEN -benchtime 3s
func BenchmarkAuthZENEvaluation(b *testing.B) {
	e := newEnvWith(b, envOptions{policies: []string{"testdata/policies/*.cedar"}})
	e.bench = true
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	rs := e.resource("gateway")
	body := azBody(at, "github.repo.read", "acme/api", map[string]any{"tool": "git"})
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := e.do("POST", "/access/v1/evaluation", rs, body); r.Status != http.StatusOK || r.JSON["decision"] != true {
				b.Errorf("evaluation: %d %s", r.Status, r.Raw)
				return
			}
		}
	})
}
