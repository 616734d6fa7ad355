package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/errandhq/errand/store/sqlite"
)

// TestStepUpApprovalThroughTheCLI: errand dev --policies with a @step_up
// policy; the agent's mint waits for the user's approval, which the user
// gives with errand approval, and a resource server asks errand decide.
func TestStepUpApprovalThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.cedar"), []byte(`@id("allow") permit (principal, action, resource);
@id("pr-step-up") @step_up("pull requests need your approval")
forbid (principal, action == Action::"github.pr.write", resource);
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Relative patterns are read from the working directory.
	t.Chdir(dir)
	d := startDevWith(t, "127.0.0.1:0", sqlite.Memory, devPolicies{patterns: []string{"*.cedar"}})
	tok := func(args ...string) string {
		return strings.TrimSpace(d.must(t, append([]string{"dev", "token"}, args...)...))
	}
	agent := tok("--kind", "agent", "--sub", "agent-1")
	alice := tok("--kind", "user", "--sub", "alice", "--group", "eng")
	rs := tok("--kind", "resource", "--sub", "api-gateway")

	created := d.must(t, "task", "create", "--token", agent, "--on-behalf-of", "alice", "--goal", "open a PR",
		"--scope", "github.pr.write:acme/api", "--audience", "https://api.github.com",
		"--max-credentials", "3", "--max-resources", "1")
	wantLines(t, created, "max_credentials  3", "max_resources    1")
	id := regexp.MustCompile(`tsk_\w+`).FindString(created)
	d.must(t, "task", "approve", "--yes", id, "--token", alice)

	mint := []string{"token", "mint", id, "-q", "--token", agent, "--scope", "github.pr.write:acme/api", "--audience", "https://api.github.com"}
	out, errLine := d.cli(t, mint...)
	apr := regexp.MustCompile(`apr_\w+`).FindString(errLine)
	if out != "" || apr == "" || !strings.HasPrefix(errLine, "errand: 403 approval_required:") ||
		!strings.Contains(errLine, "pull requests need your approval") || strings.Contains(errLine, "\n") ||
		!strings.HasSuffix(errLine, "; the user decides at "+d.base+"/ui/approvals/"+apr) {
		t.Fatalf("mint under a step-up policy: out %q, error line %q", out, errLine)
	}

	wantLines(t, d.must(t, "approval", "list", "--token", alice, "--status", "pending"),
		"ID", "REASONS", apr, "pending", id, "github.pr.write:acme/api", "pull requests need your approval")
	wantLines(t, d.must(t, "approval", "get", apr, "--token", agent), "status        pending", "policies      pr-step-up")
	if _, errLine := d.cli(t, "approval", "approve", apr, "--token", agent); !strings.HasPrefix(errLine, "errand: 403 ") {
		t.Fatalf("the agent approved its own step-up: %q", errLine)
	}
	wantLines(t, d.must(t, "approval", "approve", apr, "--token", alice), "id            "+apr, "status        approved")

	at := strings.TrimSpace(d.must(t, mint...))
	if strings.Count(at, ".") != 2 {
		t.Fatalf("mint after the approval: %q", at)
	}
	decide := func(resource string) (string, string) {
		return d.cli(t, "decide", at, "--token", rs, "--action", "github.pr.write", "--resource-type", "repository", "--resource", resource)
	}
	out, errLine = decide("acme/api")
	if errLine != "" {
		t.Fatalf("decide acme/api: %s", errLine)
	}
	wantLines(t, out, "decision  allow", "reason    allowed under step-up approval "+apr)
	out, errLine = decide("acme/other")
	if out != "" || !strings.HasPrefix(errLine, "errand: deny: ") || !strings.Contains(errLine, "acme/other") {
		t.Fatalf("decide acme/other: out %q, error line %q", out, errLine)
	}

	// The approval was used up: the same mint asks again, and a denial
	// says why.
	_, errLine = d.cli(t, mint...)
	apr2 := regexp.MustCompile(`apr_\w+`).FindString(errLine)
	if apr2 == "" || apr2 == apr {
		t.Fatalf("second mint: %q", errLine)
	}
	wantLines(t, d.must(t, "approval", "list", "--token", alice, "--status", "used"), apr)
	wantLines(t, d.must(t, "approval", "deny", apr2, "--token", alice, "--reason", "one PR is enough"),
		"status        denied", `deny_reason   "one PR is enough"`)
}
