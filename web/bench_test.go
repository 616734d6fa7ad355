package web_test

import (
	"net/http"
	"testing"
)

// BenchmarkTaskPage is one approver's GET of a task's page over
// PostgreSQL: the session, the task read, the catalog's view of each
// scope, the template.
func BenchmarkTaskPage(b *testing.B) {
	e := newEnv(b)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**", "github.pr.write:acme/api")
	alice := e.signIn("alice", "eng")
	b.ResetTimer()
	for b.Loop() {
		if r := alice.get("/ui/tasks/" + id); r.Status != http.StatusOK {
			b.Fatalf("%d", r.Status)
		}
	}
}

// BenchmarkHistoryPage is an auditor's history page: the newest events,
// and the chart's count of a day's issuance and refusals.
func BenchmarkHistoryPage(b *testing.B) {
	e := newEnv(b)
	for range 20 {
		id := e.createTask("fix the flaky test", "github.repo.read:acme/**")
		alice := e.signIn("alice", "eng")
		alice.post("/ui/tasks/"+id+"/approve", with(shown(b, alice.get("/ui/tasks/"+id).Body), "mode", "all"), nil)
		e.mint(id, "github.repo.read:acme/api", apiGitHub)
		e.mint(id, "github.pr.write:acme/api", apiGitHub)
	}
	carol := e.signIn("carol", "auditors")
	b.ResetTimer()
	for b.Loop() {
		if r := carol.get("/ui/history"); r.Status != http.StatusOK {
			b.Fatalf("%d", r.Status)
		}
	}
}
