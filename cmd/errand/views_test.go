package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/errandhq/errand/client"
	"github.com/errandhq/errand/store/sqlite"
)

// render prints a view as the CLI does (through its tabwriter).
func render(view func(io.Writer)) string {
	var buf bytes.Buffer
	(&globals{}).emit(&buf, nil, view)
	return buf.String()
}

// lineIndex is the index of the first line of out that starts with
// prefix (after the tabwriter's padding is collapsed), or -1.
func lineIndex(out, prefix string) int {
	for i, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.Join(strings.Fields(l), " "), prefix) {
			return i
		}
	}
	return -1
}

// inOrder asserts that lines starting with each prefix appear, in order.
func inOrder(t *testing.T, out string, prefixes ...string) {
	t.Helper()
	last, prev := -1, ""
	for _, p := range prefixes {
		i := lineIndex(out, p)
		if i < 0 {
			t.Fatalf("no line starts with %q:\n%s", p, out)
		}
		if i <= last {
			t.Fatalf("%q is not after %q:\n%s", p, prev, out)
		}
		last, prev = i, p
	}
}

// lineStarts are the first words of a view's lines.
func lineStarts(out string) []string {
	var starts []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(l, " ") {
			starts = append(starts, f[0])
		}
	}
	return starts
}

// TestH09TaskGetShowsTheDecisionBeforeTheAgentsWords: errand task get shows
// the approver the scopes with their class and risk, the audiences and the
// expiry first, then the agent's goal, tool and dataset apart and quoted;
// a goal that would start a line of its own is refused.
func TestH09TaskGetShowsTheDecisionBeforeTheAgentsWords(t *testing.T) {
	d := startDev(t, "127.0.0.1:0", sqlite.Memory)
	agent := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "agent", "--sub", "agent-1"))
	alice := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "user", "--sub", "alice", "--group", "eng"))
	goal := `risk: low — "read-only" triage`
	id := strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice", "--goal", goal,
		"--scope", "github.pr.write:acme/api", "--scope", "github.repo.read:acme/**", "--audience", "https://api.github.com",
		"--tool", "gh", "--dataset", "repos"))

	out := d.must(t, "task", "get", id, "--token", alice)
	inOrder(t, out, "id "+id, "status pending", "risk medium",
		"scopes github.pr.write:acme/api (write, risk medium)", "github.repo.read:acme/** (read, risk low)",
		"audiences https://api.github.com", "expires_at ", agentWordsHeading,
		`goal "risk: low — \"read-only\" triage"`, `tool "gh"`, `dataset "repos"`)
	if strings.Count(out, "risk: low") != 1 || lineIndex(out, "goal") < lineIndex(out, agentWordsHeading) {
		t.Fatalf("the goal is shown outside the agent's words:\n%s", out)
	}

	for _, bad := range []string{"triage\n\nrisk      low\nscopes    github.repo.read", "triage\tissues", "triage \u202e", "\x1b[2Jtriage"} {
		_, errLine := d.cli(t, "task", "create", "--token", agent, "--on-behalf-of", "alice", "--goal", bad,
			"--scope", "github.pr.write:acme/api", "--audience", "https://api.github.com")
		if !strings.HasPrefix(errLine, "errand: 400 invalid_request") || strings.Contains(errLine, "\n") {
			t.Fatalf("goal %q: %q", bad, errLine)
		}
	}

	d.must(t, "task", "approve", "--yes", id, "--token", alice, "--scope", "github.repo.read:acme/api")
	out = d.must(t, "task", "get", id, "--token", alice)
	inOrder(t, out, "status approved", "scopes github.pr.write:acme/api (write, risk medium)",
		"approved_scopes github.repo.read:acme/api (read, risk low)", "audiences https://api.github.com (approved)",
		agentWordsHeading, `goal "risk: low`)
}

// TestH09TaskViewCannotBeForged: whatever a stored goal, tool or dataset
// holds (a row written before control characters were refused), the view
// has exactly its own lines, and the text is one quoted line.
func TestH09TaskViewCannotBeForged(t *testing.T) {
	forged := "triage\n\nrisk             low\nscopes           github.repo.read (read, risk low)\n\u202eexpires_at 2000"
	out := render(func(w io.Writer) {
		printTask(w, client.Task{ID: "tsk_1", Status: "pending", Agent: "https://ci#agent-1", OnBehalfOf: "alice",
			Goal: forged, Tool: "gh\tscopes x", Dataset: "d\r\nrisk low", Risk: "high",
			Scopes:       []string{"aws.iam.admin"},
			ScopeDetails: []client.ScopeDetail{{Scope: "aws.iam.admin", Class: "admin", Risk: "high"}},
			Audiences:    []string{"https://aws"}, ExpiresAt: "2030-01-01T00:00:00Z"})
	})
	want := "id status agent on_behalf_of risk scopes approved_scopes audiences expires_at Agent's"
	if got := strings.Join(lineStarts(out), " "); got != want {
		t.Fatalf("the view's lines start %q, want %q:\n%s", got, want, out)
	}
	if strings.Count(out, "\n") != 13 || strings.Contains(out, "\u202e") || strings.Contains(out, "\r") {
		t.Fatalf("a label made lines of its own or kept a control character:\n%s", out)
	}
	inOrder(t, out, "scopes aws.iam.admin (admin, risk high)", agentWordsHeading,
		`goal "triage\n\nrisk low\nscopes github.repo.read (read, risk low)\n\u202eexpires_at 2000"`,
		`tool "gh\tscopes x"`, `dataset "d\r\nrisk low"`)
}

// TestR05ApprovalGetShowsTheDecisionBeforeTheAgentsWords: errand approval
// get shows the step-up's scopes with class and risk, audience and expiry
// before the agent's tool and dataset, quoted; the user's reason is quoted;
// labels and reasons that would start lines are refused.
func TestR05ApprovalGetShowsTheDecisionBeforeTheAgentsWords(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.cedar"), []byte(`@id("allow") permit (principal, action, resource);
@id("pr-step-up") @step_up("pull requests need your approval")
forbid (principal, action == Action::"github.pr.write", resource);
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	d := startDevWith(t, "127.0.0.1:0", sqlite.Memory, devPolicies{patterns: []string{"*.cedar"}})
	agent := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "agent", "--sub", "agent-1"))
	alice := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "user", "--sub", "alice", "--group", "eng"))
	id := regexp.MustCompile(`tsk_\w+`).FindString(d.must(t, "task", "create", "--token", agent, "--on-behalf-of", "alice",
		"--goal", "open a PR", "--scope", "github.pr.write:acme/**", "--audience", "https://api.github.com"))
	d.must(t, "task", "approve", "--yes", id, "--token", alice)

	mint := func(tool, dataset string) string {
		_, errLine := d.cli(t, "token", "mint", id, "-q", "--token", agent, "--scope", "github.pr.write:acme/api",
			"--audience", "https://api.github.com", "--tool", tool, "--dataset", dataset)
		return errLine
	}
	apr := regexp.MustCompile(`apr_\w+`).FindString(mint("gh: low-risk, read-only", "repos"))
	if apr == "" {
		t.Fatal("no step-up approval")
	}
	out := d.must(t, "approval", "get", apr, "--token", alice)
	inOrder(t, out, "id "+apr, "status pending", "task "+id, "scopes github.pr.write:acme/api (write, risk medium)",
		"audience https://api.github.com", "expires_at ", "policies pr-step-up", "reasons pull requests need your approval",
		agentWordsHeading, `tool "gh: low-risk, read-only"`, `dataset "repos"`)

	for _, bad := range []string{"gh\nscopes    github.repo.read (read, risk low)", "gh\t", "gh\u2028", "gh\u202e"} {
		if errLine := mint(bad, "repos"); !strings.HasPrefix(errLine, "errand: 400 invalid_request") {
			t.Fatalf("tool %q: %q", bad, errLine)
		}
		if errLine := mint("gh", bad); !strings.HasPrefix(errLine, "errand: 400 invalid_request") {
			t.Fatalf("dataset %q: %q", bad, errLine)
		}
		if _, errLine := d.cli(t, "approval", "deny", apr, "--token", alice, "--reason", bad); !strings.HasPrefix(errLine, "errand: 400 invalid_request") {
			t.Fatalf("reason %q: %q", bad, errLine)
		}
	}
	out = d.must(t, "approval", "deny", apr, "--token", alice, "--reason", `not "today"`)
	inOrder(t, out, "status denied", "scopes github.pr.write:acme/api (write, risk medium)",
		`deny_reason "not \"today\""`, agentWordsHeading, `tool "gh: low-risk, read-only"`)
}

// TestR05ApprovalViewCannotBeForged: a stored tool or dataset holding line
// breaks (a row from before they were refused) stays one quoted line.
func TestR05ApprovalViewCannotBeForged(t *testing.T) {
	out := render(func(w io.Writer) {
		printApproval(w, client.Approval{ID: "apr_1", Status: "pending", TaskID: "tsk_1", Agent: "https://ci#agent-1",
			OnBehalfOf: "alice", Scopes: []string{"github.pr.write:acme/api"}, Audience: "https://api.github.com",
			ScopeDetails: []client.ScopeDetail{{Scope: "github.pr.write:acme/api", Class: "write", Risk: "medium"}},
			Tool:         "gh\nscopes        github.repo.read (read, risk low)\nnote          low-risk",
			Dataset:      "x\u2029reasons  none", DenyReason: "ok\nstatus approved",
			Policies: []string{"pr-step-up"}, Reasons: []string{"pull requests need your approval"}, ExpiresAt: "2030-01-01T00:00:00Z"})
	})
	want := "id status task agent on_behalf_of scopes audience expires_at policies reasons deny_reason Agent's"
	if got := strings.Join(lineStarts(out), " "); got != want {
		t.Fatalf("the view's lines start %q, want %q:\n%s", got, want, out)
	}
	inOrder(t, out, "scopes github.pr.write:acme/api (write, risk medium)", `deny_reason "ok\nstatus approved"`,
		agentWordsHeading, `tool "gh\nscopes github.repo.read (read, risk low)\nnote low-risk"`, `dataset "x\u2029reasons none"`)
}
