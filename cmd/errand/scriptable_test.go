package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/store/sqlite"
)

// exec runs one errand command line as main does, against the dev server:
// its stdout, stderr and exit code.
func (d *devServer) exec(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return execCLI(context.Background(), append(args, "--server", d.base)...)
}

func execCLI(ctx context.Context, args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := execute(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func devTokens(t *testing.T, d *devServer) (agent, alice, rs, auditor, admin string) {
	t.Helper()
	tok := func(args ...string) string {
		return strings.TrimSpace(d.must(t, append([]string{"dev", "token"}, args...)...))
	}
	return tok("--kind", "agent", "--sub", "agent-1"), tok("--kind", "user", "--sub", "alice", "--group", "eng"),
		tok("--kind", "resource", "--sub", "api-gateway"), tok("--kind", "user", "--sub", "carol", "--group", "auditors"),
		tok("--kind", "user", "--sub", "root", "--group", "admins")
}

func createTask(t *testing.T, d *devServer, agent, goal string) string {
	t.Helper()
	return strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice",
		"--goal", goal, "--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com"))
}

// TestListsPaginate: task list, approval-less audit events and credentials
// print one page with the cursor of the next (never stopping silently),
// --cursor reads it, --all follows next_cursor to the end; task list shows
// each agent's goal quoted and escaped, with relative ages beside times.
func TestListsPaginate(t *testing.T) {
	d := startDev(t, "127.0.0.1:0", sqlite.Memory)
	agent, alice, _, auditor, _ := devTokens(t, d)
	var ids []string
	for _, goal := range []string{"first", "second", "say \"ID  STATUS\" and keep going past the end of the column"} {
		ids = append(ids, createTask(t, d, agent, goal))
	}

	first := d.must(t, "task", "list", "--token", alice, "--limit", "2")
	next := regexp.MustCompile(`more: --cursor (\S+) \(or --all\)`).FindStringSubmatch(first)
	if next == nil || strings.Count(first, "tsk_") != 2 {
		t.Fatalf("first page of 3 tasks with --limit 2:\n%s", first)
	}
	wantLines(t, first, "GOAL", "CREATED", "EXPIRES")
	if !regexp.MustCompile(`\((in 59m|in 1h00m)\)`).MatchString(first) || !strings.Contains(first, "(now)") {
		t.Fatalf("no relative ages beside the times:\n%s", first)
	}
	rest := d.must(t, "task", "list", "--token", alice, "--limit", "2", "--cursor", next[1])
	if strings.Count(rest, "tsk_") != 1 || strings.Contains(rest, "more:") {
		t.Fatalf("second page:\n%s", rest)
	}
	all := first + rest
	for _, id := range ids {
		wantLines(t, all, id)
	}
	// The agent's goal is quoted and escaped, and cut outside the quotes.
	wantLines(t, all, `"say \"ID  STATUS\" and keep going past the"…`, `"first"`)

	var doc struct {
		Tasks      []map[string]any `json:"tasks"`
		NextCursor *string          `json:"next_cursor"`
	}
	raw := d.must(t, "task", "list", "--token", alice, "--limit", "1", "--all", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &doc); err != nil || len(doc.Tasks) != 3 || doc.NextCursor != nil {
		t.Fatalf("--all -o json: %v\n%s", err, raw)
	}
	raw = d.must(t, "task", "list", "--token", alice, "--limit", "1", "--json")
	if err := json.Unmarshal([]byte(raw), &doc); err != nil || len(doc.Tasks) != 1 || doc.NextCursor == nil {
		t.Fatalf("one page with --json keeps next_cursor: %v\n%s", err, raw)
	}
	y := d.must(t, "task", "list", "--token", alice, "--limit", "1", "-o", "yaml")
	wantLines(t, y, "tasks:\n", "next_cursor: ", "    goal: ")

	events := d.must(t, "audit", "events", "--token", auditor, "--type", "task.created", "--limit", "2")
	if strings.Count(events, "task.created") != 2 || !strings.Contains(events, "more: --cursor ") {
		t.Fatalf("audit events --limit 2:\n%s", events)
	}
	raw = d.must(t, "audit", "events", "--token", auditor, "--type", "task.created", "--limit", "1", "--all", "--json")
	var evs struct{ Events []map[string]any }
	if err := json.Unmarshal([]byte(raw), &evs); err != nil || len(evs.Events) != 3 {
		t.Fatalf("audit events --all: %v\n%s", err, raw)
	}
	for _, id := range ids {
		d.must(t, "task", "approve", "--yes", id, "--token", alice)
		d.must(t, "token", "mint", id, "-q", "--token", agent, "--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com")
	}
	creds := d.must(t, "audit", "credentials", "--token", auditor, "--limit", "2")
	if strings.Count(creds, "tsk_") != 2 || !strings.Contains(creds, "more: --cursor ") {
		t.Fatalf("audit credentials --limit 2:\n%s", creds)
	}
	if got := d.must(t, "audit", "credentials", "--token", auditor, "--limit", "2", "--all"); strings.Count(got, "tsk_") != 3 || strings.Contains(got, "more:") {
		t.Fatalf("audit credentials --all:\n%s", got)
	}
	if _, errOut, code := d.exec(t, "task", "list", "--token", alice, "--limit", "-1"); code != exitUsage {
		t.Fatalf("--limit -1: exit %d %s", code, errOut)
	}
}

// stepUpDev is errand dev with a @step_up policy on github.pr.write, and
// an approved task of agent-1 for alice that asks for it.
func stepUpDev(t *testing.T) (d *devServer, agent, alice, rs, task string, mint []string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.cedar"), []byte(`@id("allow") permit (principal, action, resource);
@id("pr-step-up") @step_up("pull requests need your approval")
forbid (principal, action == Action::"github.pr.write", resource);
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDevWith(t, "127.0.0.1:0", sqlite.Memory, devPolicies{patterns: []string{filepath.Join(dir, "*.cedar")}})
	agent, alice, rs, _, _ = devTokens(t, d)
	task = strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice",
		"--goal", "open a PR \"now\"", "--scope", "github.pr.write:acme/api", "--audience", "https://api.github.com"))
	d.must(t, "task", "approve", "--yes", task, "--token", alice)
	mint = []string{"token", "mint", task, "-q", "--token", agent, "--scope", "github.pr.write:acme/api", "--audience", "https://api.github.com"}
	return d, agent, alice, rs, task, mint
}

// TestExitCodesAndProblemDocuments: each kind of failure has its own exit
// code, and with -o json (or --json) the problem document is on stdout,
// approval_id included.
func TestExitCodesAndProblemDocuments(t *testing.T) {
	d, agent, alice, _, task, mint := stepUpDev(t)

	_, errOut, code := d.exec(t, append(mint, "-o", "json")...)
	if code != exitPending {
		t.Fatalf("approval_required: exit %d, %s", code, errOut)
	}
	out, _, _ := d.exec(t, append(mint, "--json")...)
	var p struct {
		Code       string `json:"code"`
		ApprovalID string `json:"approval_id"`
		Status     int    `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Code != "approval_required" || !strings.HasPrefix(p.ApprovalID, "apr_") || p.Status != 403 {
		t.Fatalf("problem document on stdout: %v %+v\n%s", err, p, out)
	}
	if y, _, _ := d.exec(t, append(mint, "-o", "yaml")...); !strings.Contains(y, "code: approval_required") || !strings.Contains(y, "approval_id: apr_") {
		t.Fatalf("-o yaml error:\n%s", y)
	}
	if out, errOut, _ := d.exec(t, mint...); out != "" || !strings.HasPrefix(errOut, "errand: 403 approval_required") {
		t.Fatalf("table output keeps stdout clean: %q %q", out, errOut)
	}

	// The approval list shows the task's goal, escaped, and the ages.
	list := d.must(t, "approval", "list", "--token", alice)
	wantLines(t, list, "GOAL", p.ApprovalID, `"open a PR \"now\""`, "(now)")

	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"unknown flag", []string{"task", "list", "--nope"}, exitUsage},
		{"missing argument", []string{"task", "get"}, exitUsage},
		{"missing required flag", []string{"token", "mint", task, "--token", agent}, exitUsage},
		{"unknown output", []string{"task", "list", "-o", "xml"}, exitUsage},
		{"unknown command", []string{"tsak", "list"}, exitUsage},
		{"-o json on a text command", []string{"config", "check", "--config", "errand.yaml", "--json"}, exitUsage},
		{"no token", []string{"task", "list", "--token", ""}, exitAuth},
		{"garbage token", []string{"task", "list", "--token", "garbage"}, exitAuth},
		{"no such task", []string{"task", "get", "tsk_0000000000000000000000", "--token", alice}, exitNotFound},
		{"agent approving", []string{"task", "approve", "--yes", task, "--token", agent}, exitRefused},
		{"bad request", []string{"task", "list", "--status", "bogus", "--token", alice}, exitRefused},
		{"escalation", []string{"token", "mint", task, "--token", agent, "--scope", "github.pr.write:acme/**", "--audience", "https://api.github.com"}, exitRefused},
	} {
		if _, errOut, code := d.exec(t, c.args...); code != c.want {
			t.Errorf("%s: exit %d, want %d (%s)", c.name, code, c.want, errOut)
		}
	}
	out, _, code = execCLI(context.Background(), "task", "list", "--token", alice, "--server", "http://127.0.0.1:1", "--json")
	if code != exitFailure || !strings.Contains(out, `"code": "error"`) {
		t.Fatalf("unreachable server: exit %d\n%s", code, out)
	}
	out, _, code = d.exec(t, "task", "get", "--json")
	if code != exitUsage || !strings.Contains(out, `"code": "usage"`) {
		t.Fatalf("usage error with --json: exit %d\n%s", code, out)
	}

	// -o json on the other commands that print something of their own.
	var tok struct {
		IDToken string `json:"id_token"`
	}
	if out := d.must(t, "dev", "token", "--kind", "agent", "--sub", "x", "-o", "json"); json.Unmarshal([]byte(out), &tok) != nil || strings.Count(tok.IDToken, ".") != 2 {
		t.Fatalf("dev token -o json: %s", out)
	}
	var v struct{ Version, Go string }
	if out := d.must(t, "version", "--json"); json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.Go == "" {
		t.Fatalf("version --json: %s", out)
	}
	if out := d.must(t, "version", "-o", "yaml"); !strings.Contains(out, "version: ") {
		t.Fatalf("version -o yaml: %s", out)
	}

	help, _, _ := execCLI(context.Background(), "--help")
	wantLines(t, help, "Exit codes:", "2  usage", "3  authentication", "4  refused", "5  approval pending", "6  not found")
}

// TestTaskWait: task wait exits 5 while the task is pending at --timeout,
// 0 once approved (printing it), 4 once denied.
func TestTaskWait(t *testing.T) {
	d := startDev(t, "127.0.0.1:0", sqlite.Memory)
	agent, alice, _, _, _ := devTokens(t, d)
	task := createTask(t, d, agent, "wait for me")
	start := time.Now()
	if _, errOut, code := d.exec(t, "task", "wait", task, "--token", agent, "--timeout", "300ms", "--interval", "50ms"); code != exitPending ||
		!strings.Contains(errOut, "still pending") {
		t.Fatalf("pending at the timeout: exit %d %s", code, errOut)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("task wait overran its timeout")
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		d.exec(t, "task", "approve", "--yes", task, "--token", alice)
	}()
	out, errOut, code := d.exec(t, "task", "wait", task, "--token", agent, "--timeout", "20s", "--interval", "50ms")
	if code != exitOK || !strings.Contains(out, "status           approved") {
		t.Fatalf("approved while waiting: exit %d %s\n%s", code, errOut, out)
	}
	denied := createTask(t, d, agent, "deny me")
	d.must(t, "task", "deny", denied, "--token", alice, "--reason", "no")
	if out, errOut, code := d.exec(t, "task", "wait", denied, "--token", agent, "--json"); code != exitRefused ||
		!strings.Contains(out, `"status": "denied"`) || strings.Count(out, `"status"`) != 1 {
		t.Fatalf("denied: exit %d %s\n%s", code, errOut, out)
	}
}

// TestCommandsForWhatOnlyCurlDid: task history, token revoke (RFC 7009),
// agent suspend and unsuspend, the revocation feed and its --follow
// stream, secret get's refusal without Vault, decide's deny exit code.
func TestCommandsForWhatOnlyCurlDid(t *testing.T) {
	d := startDev(t, "127.0.0.1:0", sqlite.Memory)
	agent, alice, rs, auditor, admin := devTokens(t, d)
	task := createTask(t, d, agent, "history")
	d.must(t, "task", "approve", "--yes", task, "--token", alice)
	mint := []string{"token", "mint", task, "-q", "--token", agent, "--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com"}
	at := strings.TrimSpace(d.must(t, mint...))

	hist := d.must(t, "task", "history", task, "--token", auditor)
	wantLines(t, hist, "id               "+task, "task.created", "task.approved", "credential.issued", "JTI", "ISSUED")

	// Follow the feed while revocations commit.
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		follow bytes.Buffer
		done   = make(chan int)
	)
	go func() {
		var errOut bytes.Buffer
		code := execute(ctx, []string{"revocations", "--follow", "--json", "--token", rs, "--server", d.base}, lockedWriter{&mu, &follow}, &errOut)
		done <- code
	}()

	if out := d.must(t, "token", "revoke", at, "--token", agent); !strings.Contains(out, "revoked") {
		t.Fatalf("token revoke: %s", out)
	}
	wantLines(t, d.must(t, "token", "introspect", at, "--token", rs), "active  false")
	if out := d.must(t, "token", "revoke", "not-a-token", "--token", agent); !strings.Contains(out, "revoked") {
		t.Fatalf("RFC 7009 answers the same for an unknown token: %s", out)
	}

	agentName := regexp.MustCompile(`agent\s+(\S+)`).FindStringSubmatch(d.must(t, "task", "get", task, "--token", alice))[1]
	if _, errOut, code := d.exec(t, "agent", "suspend", agentName, "--token", alice); code != exitRefused {
		t.Fatalf("a non-admin suspended an agent: exit %d %s", code, errOut)
	}
	at2 := strings.TrimSpace(d.must(t, mint...))
	wantLines(t, d.must(t, "agent", "suspend", agentName, "--reason", "test", "--token", admin), "suspended    true", "tasks_ended  1", "revoked      1")
	if _, errOut, code := d.exec(t, "task", "create", "--token", agent, "--on-behalf-of", "alice", "--goal", "g",
		"--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com"); code != exitRefused || !strings.Contains(errOut, "agent_suspended") {
		t.Fatalf("a suspended agent's task: exit %d %s", code, errOut)
	}
	wantLines(t, d.must(t, "agent", "unsuspend", agentName, "--token", admin), "suspended  false")
	createTask(t, d, agent, "after the suspension")

	// Both revocations came through the stream, one JSON object a line.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := follow.String()
		mu.Unlock()
		if strings.Count(got, `"jti"`) >= 2 {
			for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
				var e feedEntry
				if err := json.Unmarshal([]byte(line), &e); err != nil || e.TaskID != task {
					t.Fatalf("streamed line %q: %v", line, err)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--follow printed:\n%s", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("--follow ended with %d", code)
	}
	_ = at2

	// A stream opened again from a position (Last-Event-ID) sends only
	// what follows it.
	var fd struct{ Revocations []feedEntry }
	if err := json.Unmarshal([]byte(d.must(t, "revocations", "--token", rs, "--json")), &fd); err != nil || len(fd.Revocations) != 2 {
		t.Fatalf("revocations --json: %v %+v", err, fd)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	var resumed bytes.Buffer
	go func() {
		done <- execute(ctx2, []string{"revocations", "--follow", "--since", strconv.FormatInt(fd.Revocations[0].Seq, 10), "--json",
			"--token", rs, "--server", d.base}, lockedWriter{&mu, &resumed}, io.Discard)
	}()
	deadline = time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := resumed.String()
		mu.Unlock()
		if strings.Contains(got, "\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the resumed stream printed nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	cancel2()
	<-done
	var e feedEntry
	if lines := strings.Split(strings.TrimSpace(resumed.String()), "\n"); len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &e) != nil ||
		e.Seq != fd.Revocations[1].Seq {
		t.Fatalf("resumed after seq %d:\n%s", fd.Revocations[0].Seq, resumed.String())
	}

	feed := d.must(t, "revocations", "--token", rs)
	if strings.Count(feed, task) != 2 || !strings.Contains(feed, "SEQ") {
		t.Fatalf("revocations:\n%s", feed)
	}
	page := d.must(t, "revocations", "--token", rs, "--limit", "1")
	next := regexp.MustCompile(`more: --since (\S+)`).FindStringSubmatch(page)
	if strings.Count(page, task) != 1 || next == nil {
		t.Fatalf("revocations --limit 1:\n%s", page)
	}
	if rest := d.must(t, "revocations", "--token", rs, "--since", next[1]); strings.Count(rest, task) != 1 {
		t.Fatalf("revocations --since %s:\n%s", next[1], rest)
	}
	if all := d.must(t, "revocations", "--token", rs, "--limit", "1", "--all"); strings.Count(all, task) != 2 {
		t.Fatalf("revocations --all:\n%s", all)
	}
	if _, errOut, code := d.exec(t, "revocations", "--follow", "--token", agent); code != exitRefused {
		t.Fatalf("an agent following the feed: exit %d %s", code, errOut)
	}

	// errand dev has no Vault: the agent's request reaches the endpoint
	// and is refused with a code.
	if _, errOut, code := d.exec(t, "secret", "get", task, "--role", "orders", "--token", agent); code == exitOK || code == exitUsage ||
		!strings.HasPrefix(errOut, "errand: 4") {
		t.Fatalf("secret get without Vault: exit %d %s", code, errOut)
	}
	if _, errOut, code := d.exec(t, "decide", "not-a-token", "--token", rs, "--action", "github.repo.read", "--resource-type", "repository", "--resource", "acme/api"); code != exitRefused ||
		!strings.HasPrefix(errOut, "errand: deny: ") {
		t.Fatalf("decide's deny: exit %d %s", code, errOut)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestApprovalWait: the agent refused with approval_required waits with
// approval wait: exit 5 while pending at --timeout, 0 once its user
// approves (and its repeated mint succeeds), 4 once denied.
func TestApprovalWait(t *testing.T) {
	d, agent, alice, _, _, mint := stepUpDev(t)
	out, _, code := d.exec(t, append(mint, "-o", "json")...)
	var p struct {
		ApprovalID string `json:"approval_id"`
	}
	if code != exitPending || json.Unmarshal([]byte(out), &p) != nil || p.ApprovalID == "" {
		t.Fatalf("mint: exit %d\n%s", code, out)
	}
	if _, errOut, code := d.exec(t, "approval", "wait", p.ApprovalID, "--token", agent, "--timeout", "200ms", "--interval", "50ms"); code != exitPending ||
		!strings.Contains(errOut, "still pending after 200ms") {
		t.Fatalf("pending at the timeout: exit %d %s", code, errOut)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		d.exec(t, "approval", "approve", p.ApprovalID, "--token", alice)
	}()
	if out, errOut, code := d.exec(t, "approval", "wait", p.ApprovalID, "--token", agent, "--timeout", "20s", "--interval", "50ms"); code != exitOK ||
		!strings.Contains(out, "approved") {
		t.Fatalf("approved while waiting: exit %d %s\n%s", code, errOut, out)
	}
	if at := strings.TrimSpace(d.must(t, mint...)); strings.Count(at, ".") != 2 {
		t.Fatalf("the repeated mint: %q", at)
	}
	out, _, _ = d.exec(t, append(mint, "--json")...)
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	d.must(t, "approval", "deny", p.ApprovalID, "--token", alice, "--reason", "no")
	if _, errOut, code := d.exec(t, "approval", "wait", p.ApprovalID, "--token", agent); code != exitRefused || !strings.Contains(errOut, "denied") {
		t.Fatalf("denied: exit %d %s", code, errOut)
	}
	if _, errOut, code := d.exec(t, "approval", "wait", p.ApprovalID, "--token", agent, "--interval", "0s"); code != exitUsage {
		t.Fatalf("--interval 0: exit %d %s", code, errOut)
	}
}
