package httpapi

import (
	"net/http"
	"testing"
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
