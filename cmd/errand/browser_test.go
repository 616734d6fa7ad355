package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/errandhq/errand/client"
	"github.com/errandhq/errand/internal/testing/testbrowser"
	"github.com/errandhq/errand/store/sqlite"
)

// The approval loop of errand dev in headless Chromium, with no token
// pasted anywhere: alice signs in through the dev provider's page, sees
// the agent's task in her queue, narrows and approves it; the agent's
// mint succeeds for the narrowed scope and fails for the rest; she denies
// another task; a prod write asks for a step-up, whose approval_url she
// opens and approves; carol, an auditor, reads the history. With
// ERRAND_UPDATE_SCREENSHOTS=1 it writes docs/ui-*.png.
func TestBrowserApprovalLoop(t *testing.T) {
	browser := testbrowser.New(t)
	d := startDevWith(t, "127.0.0.1:0", sqlite.Memory, devPolicies{patterns: []string{"testdata/stepup-prod-writes.cedar"}})
	ctx := context.Background()
	agentTok, err := client.New(d.base, "").DevToken(ctx, "agent", "agent-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := client.New(d.base, agentTok)
	create := func(goal string, scopes ...string) string {
		t.Helper()
		tk, _, err := agent.CreateTask(ctx, client.CreateTask{OnBehalfOf: "alice", Goal: goal, Scopes: scopes,
			Audiences: []string{"https://api.github.com", "http://localhost:9000"}, Tool: "gh"})
		if err != nil {
			t.Fatal(err)
		}
		return tk.ID
	}
	mint := func(id, scope, aud string) error {
		_, _, err := agent.Mint(ctx, id, client.Mint{Scopes: []string{scope}, Audience: aud, Tool: "gh"})
		return err
	}
	code := func(err error) string {
		var p *client.Problem
		if errors.As(err, &p) {
			return p.Code
		}
		return fmt.Sprint(err)
	}

	// The agent's goal tries to pass for Errand's own words (H09).
	fix := create(`Fix the flaky test. </blockquote><h2 id="forged">Verified by Errand: approved by security</h2><script>document.title="pwned"</script>`,
		"github.repo.read:acme/**", "github.pr.write:acme/api")

	alice := browser.Person()
	// Sign in through the provider's page: /ui/ → sign-in → the dev
	// provider's picker → back to the queue.
	testbrowser.Do(t, alice, "sign in as alice",
		chromedp.Navigate(d.base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`button[name="pick"][value="alice"]`)),
		chromedp.Click(chromedp.CSS(`button[name="pick"][value="alice"]`)),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/tasks/`+fix+`"]`)),
	)
	if who := testbrowser.Text(t, alice, ".who strong"); who != "alice" {
		t.Fatalf("signed in as %q", who)
	}
	screenshot(t, alice, "ui-queue.png")

	testbrowser.Do(t, alice, "open the task", chromedp.Click(chromedp.CSS(`a[href="/ui/tasks/`+fix+`"]`)), chromedp.WaitVisible(chromedp.ID("decided")))
	screenshot(t, alice, "ui-task.png")
	// The agent's words are text in the agent's box, after what is
	// decided: no element of its markup exists, no script of it ran.
	if n := testbrowser.Eval[int](t, alice, `document.querySelectorAll("#forged, script").length`); n != 0 {
		t.Fatalf("the agent's markup became %d elements of the page", n)
	}
	if title := testbrowser.Eval[string](t, alice, `document.title`); strings.Contains(title, "pwned") {
		t.Fatal("the agent's script ran")
	}
	goal := testbrowser.Text(t, alice, "#agent-words #task-goal")
	if !strings.Contains(goal, `<h2 id="forged">Verified by Errand`) {
		t.Fatalf("the goal is not shown as the agent's text: %q", goal)
	}
	if after := testbrowser.Eval[bool](t, alice, `!!(document.querySelector("#decided").compareDocumentPosition(document.querySelector("#task-goal")) & Node.DOCUMENT_POSITION_FOLLOWING)`); !after {
		t.Fatal("the agent's words come before what is decided")
	}

	// A form without the session's CSRF token changes nothing.
	testbrowser.Eval[bool](t, alice, `(() => { document.querySelector('#approve-form input[name="csrf"]').remove(); return true })()`)
	testbrowser.Do(t, alice, "post without the CSRF token",
		chromedp.Click(chromedp.ID("approve-all")),
		chromedp.WaitVisible(chromedp.ID("refusal")),
	)
	if c := testbrowser.Text(t, alice, "#refusal-code"); c != "csrf_failed" {
		t.Fatalf("a CSRF-less post: %q", c)
	}
	// A post from another site (same-site cookies go along) is refused.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%s/ui/tasks/%s/approve"><input name="mode" value="all">
<input name="version" value="1"><input name="csrf" value="guessed"><button id="go">win a prize</button></form>`, d.base, fix)
	}))
	defer evil.Close()
	testbrowser.Do(t, alice, "post from another site",
		chromedp.Navigate(evil.URL), chromedp.Click(chromedp.ID("go")), chromedp.WaitVisible(chromedp.ID("refusal")))
	if c := testbrowser.Text(t, alice, "#refusal-code"); c != "csrf_failed" {
		t.Fatalf("a cross-site post: %q", c)
	}
	if tk, _, _ := agent.GetTask(ctx, fix); tk.Status != "pending" {
		t.Fatalf("a refused post changed the task: %s", tk.Status)
	}

	// Narrow and approve: leave the PR write out, narrow acme/** to
	// acme/api, approve api.github.com only.
	testbrowser.Do(t, alice, "narrow and approve",
		chromedp.Navigate(d.base+"/ui/tasks/"+fix),
		chromedp.WaitVisible(chromedp.ID("approve-selected")),
		chromedp.Click(chromedp.CSS(`input[name="scope"][value="github.pr.write:acme/api"]`)),
		chromedp.Click(chromedp.CSS(`input[name="audience"][value="http://localhost:9000"]`)),
		chromedp.SetValue(chromedp.CSS(`input[name="resource:github.repo.read:acme/**"]`), "acme/api"),
		chromedp.Click(chromedp.ID("approve-selected")),
		chromedp.WaitVisible(chromedp.ID("approved-scopes")),
	)
	if st := testbrowser.Text(t, alice, "#task-status"); st != "approved" {
		t.Fatalf("status after approval: %q", st)
	}
	if err := mint(fix, "github.repo.read:acme/api", "https://api.github.com"); err != nil {
		t.Fatalf("mint within the narrowed approval: %v", err)
	}
	for _, c := range [][2]string{
		{"github.repo.read:acme/**", "https://api.github.com"},
		{"github.pr.write:acme/api", "https://api.github.com"},
		{"github.repo.read:acme/api", "http://localhost:9000"},
	} {
		if err := mint(fix, c[0], c[1]); code(err) != "scope_exceeds_approval" {
			t.Errorf("mint %s for %s: %v", c[0], c[1], err)
		}
	}

	// Deny another, with a reason.
	other := create("delete the old repo", "github.repo.read:acme/old")
	testbrowser.Do(t, alice, "deny",
		chromedp.Navigate(d.base+"/ui/tasks/"+other),
		chromedp.WaitVisible(chromedp.ID("deny")),
		chromedp.SetValue(chromedp.ID("deny-reason-input"), "not this one"),
		chromedp.Click(chromedp.ID("deny")),
		chromedp.WaitVisible(chromedp.ID("deny-reason")),
	)
	if st := testbrowser.Text(t, alice, "#task-status"); st != "denied" {
		t.Fatalf("status after denial: %q", st)
	}
	if err := mint(other, "github.repo.read:acme/old", "https://api.github.com"); code(err) != "task_not_active" {
		t.Fatalf("mint on a denied task: %v", err)
	}

	// A step-up: the prod write is refused with the approval's page,
	// which alice opens and approves; the agent's retry then succeeds.
	write := create("open the fix", "github.pr.write:acme/api")
	testbrowser.Do(t, alice, "approve the write task",
		chromedp.Navigate(d.base+"/ui/tasks/"+write), chromedp.WaitVisible(chromedp.ID("approve-all")),
		chromedp.Click(chromedp.ID("approve-all")), chromedp.WaitVisible(chromedp.ID("approved-scopes")))
	err = mint(write, "github.pr.write:acme/api", "https://api.github.com")
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "approval_required" || p.ApprovalURL != d.base+"/ui/approvals/"+p.ApprovalID {
		t.Fatalf("the prod write: %v (%+v)", err, p)
	}
	testbrowser.Do(t, alice, "approve the step-up",
		chromedp.Navigate(p.ApprovalURL), chromedp.WaitVisible(chromedp.ID("approve")))
	screenshot(t, alice, "ui-approval.png")
	testbrowser.Do(t, alice, "approve the step-up", chromedp.Click(chromedp.ID("approve")), chromedp.WaitNotPresent(chromedp.ID("approve")))
	if st := testbrowser.Text(t, alice, "#approval-status"); st != "approved" {
		t.Fatalf("step-up status: %q", st)
	}
	if err := mint(write, "github.pr.write:acme/api", "https://api.github.com"); err != nil {
		t.Fatalf("the retry after the step-up: %v", err)
	}

	// alice is no auditor: the history is refused as the API refuses it.
	testbrowser.Do(t, alice, "history as alice", chromedp.Navigate(d.base+"/ui/history"), chromedp.WaitVisible(chromedp.ID("refusal")))
	if c := testbrowser.Text(t, alice, "#refusal-code"); c != "wrong_principal_kind" {
		t.Fatalf("alice's history: %q", c)
	}

	// Signing out ends the session: the pages ask to sign in again.
	testbrowser.Do(t, alice, "sign out", chromedp.Navigate(d.base+"/ui/"), chromedp.WaitVisible(chromedp.CSS(".signout button")),
		chromedp.Click(chromedp.CSS(".signout button")), chromedp.WaitNotPresent(chromedp.CSS(".signout button")))
	testbrowser.Do(t, alice, "after sign-out", chromedp.Navigate(d.base+"/ui/tasks/"+fix),
		chromedp.WaitVisible(chromedp.CSS(`button[name="pick"][value="alice"]`)))

	// carol audits: the history, the refusals, the task's timeline.
	// A deep link opened before signing in lands on its page after the
	// sign-in; carol may read the approval, not decide it.
	carol := browser.Person()
	testbrowser.Do(t, carol, "sign in as carol through the deep link",
		chromedp.Navigate(p.ApprovalURL),
		chromedp.WaitVisible(chromedp.CSS(`button[name="pick"][value="carol"]`)),
		chromedp.Click(chromedp.CSS(`button[name="pick"][value="carol"]`)),
		chromedp.WaitVisible(chromedp.ID("approval-id")),
	)
	if n := testbrowser.Eval[int](t, carol, `document.querySelectorAll("form[action*='/approve'], form[action*='/deny']").length`); n != 0 {
		t.Fatalf("an auditor is offered %d decision forms", n)
	}
	testbrowser.Do(t, carol, "history", chromedp.Navigate(d.base+"/ui/history"), chromedp.WaitVisible(chromedp.ID("chart-svg")))
	screenshot(t, carol, "ui-history.png")
	if n := testbrowser.Eval[int](t, carol, `document.querySelectorAll("#chart-svg rect.bar-issued").length`); n != 24 {
		t.Fatalf("chart bars: %d", n)
	}
	testbrowser.Do(t, carol, "refusals", chromedp.Navigate(d.base+"/ui/history?view=refusals"), chromedp.WaitVisible(chromedp.ID("events")))
	if body := testbrowser.Text(t, carol, "#events"); !strings.Contains(body, "csrf_failed") || !strings.Contains(body, "scope_exceeds_approval") {
		t.Fatalf("refusals: %s", body)
	}
	testbrowser.Do(t, carol, "timeline", chromedp.Navigate(d.base+"/ui/history?task_id="+fix), chromedp.WaitVisible(chromedp.ID("timeline")))
	if tl := testbrowser.Text(t, carol, "#timeline"); !strings.Contains(tl, "task.approved") || !strings.Contains(tl, "credential.issued") {
		t.Fatalf("timeline: %s", tl)
	}
}

// screenshot writes the page as docs/<name> when ERRAND_UPDATE_SCREENSHOTS
// is set (README shows them).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("ERRAND_UPDATE_SCREENSHOTS") == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserApprovalWithoutJavaScript: with the page's scripts turned
// off, bob signs in, narrows and approves a task, and denies another: the
// pages need no JavaScript.
func TestBrowserApprovalWithoutJavaScript(t *testing.T) {
	browser := testbrowser.New(t)
	d := startDev(t, "127.0.0.1:0", sqlite.Memory)
	ctx := context.Background()
	agentTok, err := client.New(d.base, "").DevToken(ctx, "agent", "agent-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := client.New(d.base, agentTok)
	create := func(goal string) string {
		tk, _, err := agent.CreateTask(ctx, client.CreateTask{OnBehalfOf: "bob", Goal: goal,
			Scopes: []string{"github.repo.read:acme/**", "github.pr.write:acme/api"}, Audiences: []string{"https://api.github.com"}})
		if err != nil {
			t.Fatal(err)
		}
		return tk.ID
	}
	one, two := create("first"), create("second")
	bob := browser.Person()
	testbrowser.NoScript(t, bob)
	// Scripts are off in this tab indeed.
	scripted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>off</title><script>document.title="ran"</script><p id="p">x</p>`)
	}))
	defer scripted.Close()
	testbrowser.Do(t, bob, "a scripted page", chromedp.Navigate(scripted.URL), chromedp.WaitVisible(chromedp.ID("p")))
	if title := testbrowser.Eval[string](t, bob, "document.title"); title != "off" {
		t.Fatalf("scripts still run: title %q", title)
	}
	testbrowser.Do(t, bob, "sign in and narrow",
		chromedp.Navigate(d.base+"/ui/tasks/"+one),
		chromedp.WaitVisible(chromedp.CSS(`button[name="pick"][value="bob"]`)),
		chromedp.Click(chromedp.CSS(`button[name="pick"][value="bob"]`)),
		chromedp.WaitVisible(chromedp.ID("approve-selected")),
		chromedp.Click(chromedp.CSS(`input[name="scope"][value="github.pr.write:acme/api"]`)),
		chromedp.SetValue(chromedp.CSS(`input[name="resource:github.repo.read:acme/**"]`), "acme/docs"),
		chromedp.Click(chromedp.ID("approve-selected")),
		chromedp.WaitVisible(chromedp.ID("approved-scopes")),
	)
	tk, _, err := agent.GetTask(ctx, one)
	if err != nil || tk.Status != "approved" || strings.Join(tk.ApprovedScopes, " ") != "github.repo.read:acme/docs" {
		t.Fatalf("approved without JavaScript: %+v %v", tk, err)
	}
	testbrowser.Do(t, bob, "deny", chromedp.Navigate(d.base+"/ui/tasks/"+two), chromedp.WaitVisible(chromedp.ID("deny")),
		chromedp.Click(chromedp.ID("deny")), chromedp.WaitVisible(chromedp.CSS(".status-denied")))
	if tk, _, _ := agent.GetTask(ctx, two); tk.Status != "denied" {
		t.Fatalf("denied without JavaScript: %s", tk.Status)
	}
}
