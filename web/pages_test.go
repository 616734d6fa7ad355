package web_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/httpapi"
)

// shown reads the version and digest a task's page put in its forms.
func shown(t testing.TB, body string) url.Values {
	t.Helper()
	v := regexp.MustCompile(`name="version" value="(\d+)"`).FindStringSubmatch(body)
	d := regexp.MustCompile(`name="digest" value="([0-9a-f]+)"`).FindStringSubmatch(body)
	if v == nil || d == nil {
		t.Fatalf("the page has no decision form:\n%s", body)
	}
	return url.Values{"version": {v[1]}, "digest": {d[1]}}
}

func with(f url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, v := range f {
		out[k] = append([]string{}, v...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Add(kv[i], kv[i+1])
	}
	return out
}

// The queue lists what waits for the signed-in person, and the task's
// page shows the scopes with class, risk, description and coverage, the
// audiences with their environment, then the agent's words.
func TestQueueAndTaskPageShowWhatIsDecidedFirst(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**", "github.pr.write:acme/api")
	alice := e.signIn("alice", "eng")

	q := alice.get("/ui/")
	if q.Status != http.StatusOK || !strings.Contains(q.Body, `href="/ui/tasks/`+id+`"`) || !strings.Contains(q.Body, "fix the flaky test") ||
		!strings.Contains(q.Body, "agent-1") || !strings.Contains(q.Body, "medium") {
		t.Fatalf("queue: %d\n%s", q.Status, q.Body)
	}
	p := alice.get("/ui/tasks/" + id)
	if p.Status != http.StatusOK {
		t.Fatalf("task page: %d %s", p.Status, p.Body)
	}
	for _, want := range []string{"github.repo.read", "acme/**", "Read code, issues and pull requests", "Open and update pull requests",
		"read", "write", apiGitHub, "prod", apiLocal, "local", "covered", `id="approve-all"`, `id="deny"`} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("the task page lacks %q", want)
		}
	}
	decided, words := strings.Index(p.Body, `id="decided"`), strings.Index(p.Body, `id="agent-words"`)
	goal := strings.Index(p.Body, "fix the flaky test")
	if decided < 0 || words < decided || goal < words {
		t.Fatalf("what is decided must come first, then the agent's words: decided %d, words %d, goal %d", decided, words, goal)
	}

	// An intern's grants cover less: the page says so, scope by scope.
	bobTask := e.createTask("read docs", "github.repo.read:acme/docs", "github.pr.write:acme/api")
	_ = bobTask
	// Without a session the pages send to sign-in.
	anon := &browser{e: e, c: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if r := anon.get("/ui/tasks/" + id); r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/ui/login") {
		t.Fatalf("no session: %d %s", r.Status, r.Header.Get("Location"))
	}
}

// Approving a narrower part through the page: one scope left out, the
// other's resource narrowed, one audience. The agent's mint then succeeds
// for the narrowed scope and fails for the rest.
func TestApproveNarrowerThroughThePage(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**", "github.pr.write:acme/api")
	alice := e.signIn("alice", "eng")
	f := shown(t, alice.get("/ui/tasks/"+id).Body)
	before := e.task(id).ExpiresAt
	r := alice.post("/ui/tasks/"+id+"/approve", with(f, "mode", "selected", "scope", "github.repo.read:acme/**",
		"resource:github.repo.read:acme/**", "acme/api", "audience", apiGitHub, "ttl_minutes", "30"), nil)
	if r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/ui/tasks/"+id {
		t.Fatalf("approve: %d %s", r.Status, r.Body)
	}
	tk := e.task(id)
	if tk.Status != broker.StatusApproved || strings.Join(tk.ApprovedScopes.Strings(), " ") != "github.repo.read:acme/api" ||
		strings.Join(tk.ApprovedAudiences, " ") != apiGitHub {
		t.Fatalf("approved %v for %v", tk.ApprovedScopes.Strings(), tk.ApprovedAudiences)
	}
	if left := time.Until(tk.ExpiresAt); !tk.ExpiresAt.Before(before) || left > 30*time.Minute || left < 29*time.Minute {
		t.Fatalf("a 30-minute life: expires %v (was %v)", tk.ExpiresAt, before)
	}
	if ev := e.lastEvent(); ev.Type != broker.EventTaskApproved || ev.Actor.Subject != "alice" {
		t.Fatalf("the approval's event: %+v", ev)
	}
	if st, out := e.mint(id, "github.repo.read:acme/api", apiGitHub); st != http.StatusCreated {
		t.Fatalf("mint within the narrowed approval: %d %v", st, out)
	}
	for _, c := range []struct{ scope, aud string }{
		{"github.repo.read:acme/**", apiGitHub},
		{"github.repo.read:acme/web", apiGitHub},
		{"github.pr.write:acme/api", apiGitHub},
		{"github.repo.read:acme/api", apiLocal},
	} {
		if st, out := e.mint(id, c.scope, c.aud); st != http.StatusForbidden || out["code"] != "scope_exceeds_approval" {
			t.Errorf("mint %s for %s beyond the approval: %d %v", c.scope, c.aud, st, out)
		}
	}
	// The page now shows it approved, and offers no decision.
	p := alice.get("/ui/tasks/" + id)
	if !strings.Contains(p.Body, `id="task-status">approved`) || strings.Contains(p.Body, `id="approve-all"`) || !strings.Contains(p.Body, `id="approved-scopes"`) {
		t.Fatalf("approved task page:\n%s", p.Body)
	}
}

// A page that is stale (the task changed after it was shown) approves
// nothing: 409 task_changed, as the API answers; the same for a form that
// names no version or digest.
func TestApproveBindsTheVersionAndDigestShown(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**")
	alice := e.signIn("alice", "eng")
	f := shown(t, alice.get("/ui/tasks/"+id).Body)

	stale := with(url.Values{"version": {"7"}, "digest": f["digest"]}, "mode", "all")
	before := e.auditHead()
	r := alice.post("/ui/tasks/"+id+"/approve", stale, nil)
	if r.Status != http.StatusConflict || !strings.Contains(r.Body, "task_changed") || !strings.Contains(r.Body, "changed after this page showed it") {
		t.Fatalf("stale version: %d\n%s", r.Status, r.Body)
	}
	if e.task(id).Status != broker.StatusPending || e.auditHead() != before+1 || e.lastEvent().Type != broker.EventRequestRefused {
		t.Fatal("a stale approval changed the task, or was not audited once")
	}
	// The broker refused, and its event names the operation (as the same
	// refusal through the API would); the page records nothing more.
	if ev := e.lastEvent(); !strings.Contains(string(ev.Detail), `"op":"`+broker.OpApprove+`"`) || ev.TaskID != id {
		t.Fatalf("the stale approval's event: %s on %q", ev.Detail, ev.TaskID)
	}
	r = alice.post("/ui/tasks/"+id+"/approve", with(url.Values{"version": f["version"], "digest": {strings.Repeat("0", 64)}}, "mode", "all"), nil)
	if r.Status != http.StatusConflict || !strings.Contains(r.Body, "task_changed") {
		t.Fatalf("stale digest: %d\n%s", r.Status, r.Body)
	}
	before = e.auditHead()
	if r := alice.post("/ui/tasks/"+id+"/approve", url.Values{"mode": {"all"}}, nil); r.Status != http.StatusBadRequest || !strings.Contains(r.Body, "invalid_request") {
		t.Fatalf("no version or digest: %d\n%s", r.Status, r.Body)
	}
	// The page refused this form itself: one event, naming its route.
	if ev := e.lastEvent(); e.auditHead() != before+1 || ev.Type != broker.EventRequestRefused ||
		!strings.Contains(string(ev.Detail), `"op":"POST /ui/tasks/{id}/approve"`) || ev.TaskID != id {
		t.Fatalf("the unbound form's event: %s %s on %q (%d events)", ev.Type, ev.Detail, ev.TaskID, e.auditHead()-before)
	}
	if r := alice.post("/ui/tasks/"+id+"/approve", with(f, "mode", "selected"), nil); r.Status != http.StatusBadRequest {
		t.Fatalf("nothing selected: %d\n%s", r.Status, r.Body)
	}
	if e.task(id).Status != broker.StatusPending {
		t.Fatal("a refused approval changed the task")
	}
	// The page as shown approves.
	if r := alice.post("/ui/tasks/"+id+"/approve", with(f, "mode", "all"), nil); r.Status != http.StatusSeeOther {
		t.Fatalf("approve all: %d\n%s", r.Status, r.Body)
	}
	if tk := e.task(id); tk.Status != broker.StatusApproved || strings.Join(tk.ApprovedScopes.Strings(), " ") != "github.repo.read:acme/**" {
		t.Fatalf("approve all gave %v", tk.ApprovedScopes.Strings())
	}
	// Deciding again is refused as the API refuses it.
	if r := alice.post("/ui/tasks/"+id+"/deny", f, nil); r.Status != http.StatusConflict || !strings.Contains(r.Body, "task_immutable") {
		t.Fatalf("deny an approved task: %d\n%s", r.Status, r.Body)
	}
}

func TestDenyWithAReason(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**")
	alice := e.signIn("alice", "eng")
	f := shown(t, alice.get("/ui/tasks/"+id).Body)
	if r := alice.post("/ui/tasks/"+id+"/deny", with(f, "reason", "not this week <b>"), nil); r.Status != http.StatusSeeOther {
		t.Fatalf("deny: %d\n%s", r.Status, r.Body)
	}
	if tk := e.task(id); tk.Status != broker.StatusDenied || tk.DenyReason != "not this week <b>" {
		t.Fatalf("denied: %s %q", tk.Status, tk.DenyReason)
	}
	p := alice.get("/ui/tasks/" + id)
	if !strings.Contains(p.Body, "not this week &lt;b&gt;") || strings.Contains(p.Body, "not this week <b>") {
		t.Fatalf("the reason is not escaped:\n%s", p.Body)
	}
	if st, out := e.mint(id, "github.repo.read:acme/api", apiGitHub); st != http.StatusConflict || out["code"] != "task_not_active" {
		t.Fatalf("mint on a denied task: %d %v", st, out)
	}
}

// P01: a form post without the session's CSRF token, with a forged one,
// or from another site changes nothing and is refused (403 csrf_failed,
// audited); a GET never changes anything.
func TestP01CSRFAndGETRefused(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**")
	alice := e.signIn("alice", "eng")
	f := shown(t, alice.get("/ui/tasks/"+id).Body)
	cases := []struct {
		name   string
		form   url.Values
		header map[string]string
	}{
		{"no token", with(f, "mode", "all", "csrf", ""), nil},
		{"forged token", with(f, "mode", "all", "csrf", "f0f0f0f0f0f0f0f0"), nil},
		{"another origin", with(f, "mode", "all"), map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"cross-site fetch", with(f, "mode", "all"), map[string]string{"Origin": "", "Sec-Fetch-Site": "cross-site"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.auditHead()
			r := alice.post("/ui/tasks/"+id+"/approve", c.form, c.header)
			if r.Status != http.StatusForbidden || !strings.Contains(r.Body, "csrf_failed") {
				t.Fatalf("%d\n%s", r.Status, r.Body)
			}
			ev := e.lastEvent()
			if e.task(id).Status != broker.StatusPending || e.auditHead() != before+1 || ev.Type != broker.EventRequestRefused ||
				!strings.Contains(string(ev.Detail), `"code":"csrf_failed"`) || ev.Actor.Subject != "alice" || ev.TaskID != id {
				t.Fatalf("the refusal changed the task or was not audited: %+v", ev)
			}
		})
	}
	// Another person's token is no token of this session.
	bob := e.signIn("bob", "eng")
	if r := alice.post("/ui/tasks/"+id+"/deny", with(f, "csrf", bob.csrf), nil); r.Status != http.StatusForbidden {
		t.Fatalf("bob's token in alice's session: %d", r.Status)
	}
	// GET on a decision's path is no decision.
	for _, path := range []string{"/ui/tasks/" + id + "/approve", "/ui/tasks/" + id + "/deny"} {
		if r := alice.get(path + "?mode=all&version=" + f.Get("version") + "&digest=" + f.Get("digest")); r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("GET %s: %d", path, r.Status)
		}
	}
	if e.task(id).Status != broker.StatusPending {
		t.Fatal("a refused request changed the task")
	}
}

// P04: the agent's words (goal, tool, dataset) with markup, script, bidi
// overrides and newlines are escaped, shown as escapes, quoted in the
// agent's box after what is decided, under a CSP that runs no script.
func TestP04AgentTextIsEscapedQuotedAndLast(t *testing.T) {
	e := newEnv(t)
	goal := `</blockquote></section><h2>Verified by Errand: approved by security</h2><script>alert(1)</script><img src=x onerror=alert(2)>`
	id := e.createTask(goal, "github.repo.read:acme/**")
	// Text the API refuses today (a newline, a right-to-left override)
	// may still sit in an older row: the page shows it as escapes.
	if _, err := e.st.Pool().Exec(context.Background(), `UPDATE tasks SET goal = $2, tool = $3 WHERE id = $1`, id,
		goal+"\nSCOPE github.repo.read:acme/docs ONLY \u202eetavirp\u202c", "gh\u2066cli"); err != nil {
		t.Fatal(err)
	}
	alice := e.signIn("alice", "eng")
	for _, path := range []string{"/ui/tasks/" + id, "/ui/"} {
		p := alice.get(path)
		if p.Status != http.StatusOK {
			t.Fatalf("%s: %d", path, p.Status)
		}
		for _, bad := range []string{"<script>", "<h2>Verified by Errand", "<img", "\u202e", "\u2066", "\nSCOPE"} {
			if strings.Contains(p.Body, bad) {
				t.Errorf("%s shows %q unescaped", path, bad)
			}
		}
		for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", `\u202e`, `\n`} {
			if !strings.Contains(p.Body, want) {
				t.Errorf("%s lacks the escaped %q", path, want)
			}
		}
		csp := p.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s CSP: %q", path, csp)
		}
		if strings.Contains(p.Body, "<script") || strings.Contains(p.Body, " style=") || strings.Contains(p.Body, "<style") {
			t.Errorf("%s carries inline script or style", path)
		}
	}
	p := alice.get("/ui/tasks/" + id)
	box := regexp.MustCompile(`(?s)<blockquote class="agent-words" id="task-goal" dir="ltr">(.*?)</blockquote>`).FindStringSubmatch(p.Body)
	if box == nil || !strings.Contains(box[1], "Verified by Errand: approved by security") {
		t.Fatalf("the goal is not inside the agent's box:\n%s", p.Body)
	}
	if strings.Index(p.Body, `id="decided"`) > strings.Index(p.Body, `id="task-goal"`) {
		t.Fatal("the agent's words come before what is decided")
	}
	if !strings.Contains(p.Body, `"gh\u2066cli"`) {
		t.Fatalf("the tool label is not shown quoted with its escape:\n%s", p.Body)
	}
	// A name an identity provider vouches for is shown as escapes too.
	odd := e.signIn("eve\u202egnirts", "eng")
	if q := odd.get("/ui/"); !strings.Contains(q.Body, `eve\u202egnirts`) || strings.Contains(q.Body, "\u202e") {
		t.Fatalf("a name with a bidi override:\n%s", q.Body)
	}
}

// P05: no page may be framed.
func TestP05NoFraming(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**")
	alice := e.signIn("alice", "eng")
	for _, path := range []string{"/ui/", "/ui/tasks/" + id, "/ui/history", "/ui/nowhere", "/ui/static/style.css"} {
		r := alice.get(path)
		if r.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(r.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("%s (%d): X-Frame-Options %q, CSP %q", path, r.Status, r.Header.Get("X-Frame-Options"), r.Header.Get("Content-Security-Policy"))
		}
	}
}

// P06: someone else's task is refused by the page exactly as by the API
// (status and code), and an approval through the page is never wider
// than the request or the approver's grants.
func TestP06NotTheirsOrBeyondGrantsRefusedAsTheAPI(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**", "github.pr.write:acme/api")
	alice := e.signIn("alice", "eng")
	f := shown(t, alice.get("/ui/tasks/"+id).Body)

	mallory := e.signIn("mallory", "eng")
	apiStatus, apiOut := e.rest("GET", "/v1/tasks/"+id, e.userToken("mallory", "eng"), nil)
	r := mallory.get("/ui/tasks/" + id)
	if r.Status != apiStatus || !strings.Contains(r.Body, apiOut["code"].(string)) || strings.Contains(r.Body, "fix the flaky test") {
		t.Fatalf("someone else's task: page %d, API %d %v\n%s", r.Status, apiStatus, apiOut, r.Body)
	}
	apiStatus, apiOut = e.rest("POST", "/v1/tasks/"+id+"/approve", e.userToken("mallory", "eng"), map[string]any{})
	r = mallory.post("/ui/tasks/"+id+"/approve", with(f, "mode", "all"), nil)
	if r.Status != apiStatus || apiStatus != http.StatusForbidden || !strings.Contains(r.Body, apiOut["code"].(string)) {
		t.Fatalf("approving someone else's task: page %d, API %d %v", r.Status, apiStatus, apiOut)
	}
	missing := "tsk_" + strings.Repeat("a", 26)
	apiStatus, apiOut = e.rest("GET", "/v1/tasks/"+missing, e.userToken("alice", "eng"), nil)
	if r := alice.get("/ui/tasks/" + missing); r.Status != apiStatus || apiStatus != http.StatusNotFound || !strings.Contains(r.Body, "not_found") {
		t.Fatalf("no such task: page %d, API %d %v", r.Status, apiStatus, apiOut)
	}

	// Wider than asked: a narrowing that widens, a scope never requested,
	// an audience never requested.
	for _, c := range []struct {
		name string
		form url.Values
		code string
	}{
		{"narrowed resource that widens", with(f, "mode", "selected", "scope", "github.pr.write:acme/api",
			"resource:github.pr.write:acme/api", "acme/**", "audience", apiGitHub), "scope_exceeds_request"},
		{"resource outside the pattern", with(f, "mode", "selected", "scope", "github.repo.read:acme/**",
			"resource:github.repo.read:acme/**", "acme-evil/api", "audience", apiGitHub), "scope_exceeds_request"},
		{"scope never requested", with(f, "mode", "selected", "scope", "github.repo.delete:acme/api", "audience", apiGitHub), "scope_exceeds_request"},
		{"audience never requested", with(f, "mode", "selected", "scope", "github.repo.read:acme/**", "audience", "https://evil.example"), "invalid_request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := alice.post("/ui/tasks/"+id+"/approve", c.form, nil)
			if r.Status == http.StatusSeeOther || !strings.Contains(r.Body, c.code) {
				t.Fatalf("%d\n%s", r.Status, r.Body)
			}
			if e.task(id).Status != broker.StatusPending {
				t.Fatal("the task changed")
			}
		})
	}

	// Beyond the approver's grants: an intern's task for acme/** that the
	// intern's grants (acme/docs only) do not cover; the page says so and
	// the approval is refused as the API refuses it.
	st, out := e.rest("POST", "/v1/tasks", e.agentToken("agent-1"), map[string]any{
		"on_behalf_of": "ivan", "goal": "read", "scopes": []string{"github.repo.read:acme/docs"}, "audiences": []string{apiGitHub}})
	if st != http.StatusCreated {
		t.Fatalf("intern task: %d %v", st, out)
	}
	ivanTask := out["id"].(string)
	ivanEng := e.signIn("ivan", "interns")
	p := ivanEng.get("/ui/tasks/" + ivanTask)
	if !strings.Contains(p.Body, "covered") {
		t.Fatalf("intern page:\n%s", p.Body)
	}
	// The same intern asked for more than their grants: shown uncovered.
	st, out = e.rest("POST", "/v1/tasks", e.agentToken("agent-1"), map[string]any{
		"on_behalf_of": "ivan", "goal": "read all", "scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{apiGitHub}})
	if st != http.StatusCreated {
		// Creating a task beyond the user's grants may already be refused.
		if out["code"] != "scope_exceeds_grant" {
			t.Fatalf("intern wide task: %d %v", st, out)
		}
		return
	}
	wide := out["id"].(string)
	p = ivanEng.get("/ui/tasks/" + wide)
	if !strings.Contains(p.Body, "not covered by your grants") {
		t.Fatalf("uncovered scope not marked:\n%s", p.Body)
	}
	wf := shown(t, p.Body)
	apiStatus, apiOut = e.rest("POST", "/v1/tasks/"+wide+"/approve", e.userToken("ivan", "interns"), map[string]any{})
	r = ivanEng.post("/ui/tasks/"+wide+"/approve", with(wf, "mode", "all"), nil)
	if r.Status != apiStatus || !strings.Contains(r.Body, apiOut["code"].(string)) || e.task(wide).Status != broker.StatusPending {
		t.Fatalf("beyond grants: page %d, API %d %v", r.Status, apiStatus, apiOut)
	}
}

// A step-up: the agent's prod write is refused with approval_required and
// the page's URL; the user approves it on that page; the agent's retry
// succeeds once.
func TestStepUpThroughThePage(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("open the fix", "github.pr.write:acme/api")
	alice := e.signIn("alice", "eng")
	if r := alice.post("/ui/tasks/"+id+"/approve", with(shown(t, alice.get("/ui/tasks/"+id).Body), "mode", "all"), nil); r.Status != http.StatusSeeOther {
		t.Fatalf("approve: %d %s", r.Status, r.Body)
	}
	st, out := e.mint(id, "github.pr.write:acme/api", apiGitHub)
	if st != http.StatusForbidden || out["code"] != "approval_required" {
		t.Fatalf("prod write: %d %v", st, out)
	}
	apr := out["approval_id"].(string)
	link, _ := out["approval_url"].(string)
	if link != e.srv.URL+"/ui/approvals/"+apr {
		t.Fatalf("approval_url %q", link)
	}
	q := alice.get("/ui/")
	if !strings.Contains(q.Body, `href="/ui/approvals/`+apr+`"`) {
		t.Fatalf("the queue lacks the approval:\n%s", q.Body)
	}
	p := alice.get(strings.TrimPrefix(link, e.srv.URL))
	for _, want := range []string{"github.pr.write", "acme/api", "prod", "prod-writes-step-up", "a write to production needs your approval each time", "open the fix", `id="approve"`} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("the approval page lacks %q", want)
		}
	}
	mallory := e.signIn("mallory", "eng")
	if r := mallory.post("/ui/approvals/"+apr+"/approve", nil, nil); r.Status != http.StatusForbidden {
		t.Fatalf("mallory approves: %d", r.Status)
	}
	if r := alice.post("/ui/approvals/"+apr+"/approve", url.Values{"csrf": {""}}, nil); r.Status != http.StatusForbidden {
		t.Fatalf("no csrf: %d", r.Status)
	}
	if r := alice.post("/ui/approvals/"+apr+"/approve", nil, nil); r.Status != http.StatusSeeOther {
		t.Fatalf("approve the step-up: %d %s", r.Status, r.Body)
	}
	if st, out := e.mint(id, "github.pr.write:acme/api", apiGitHub); st != http.StatusCreated {
		t.Fatalf("the retry: %d %v", st, out)
	}
	// Deny the next one.
	_, out = e.mint(id, "github.pr.write:acme/api", apiGitHub)
	next := out["approval_id"].(string)
	if r := alice.post("/ui/approvals/"+next+"/deny", url.Values{"reason": {"one is enough"}}, nil); r.Status != http.StatusSeeOther {
		t.Fatalf("deny: %d %s", r.Status, r.Body)
	}
	if st, out := e.mint(id, "github.pr.write:acme/api", apiGitHub); st != http.StatusForbidden || out["code"] != "policy_denied" {
		t.Fatalf("after a denial: %d %v", st, out)
	}
}

// The auditors' history: events, refusals, credentials, a task's
// timeline and the chart; anyone else is refused as by the API.
func TestHistoryForAuditors(t *testing.T) {
	e := newEnv(t)
	id := e.createTask("fix the flaky test", "github.repo.read:acme/**")
	alice := e.signIn("alice", "eng")
	alice.post("/ui/tasks/"+id+"/approve", with(shown(t, alice.get("/ui/tasks/"+id).Body), "mode", "all"), nil)
	if st, _ := e.mint(id, "github.repo.read:acme/api", apiGitHub); st != http.StatusCreated {
		t.Fatal("mint")
	}
	e.mint(id, "github.pr.write:acme/api", apiGitHub) // refused

	carol := e.signIn("carol", "auditors")
	h := carol.get("/ui/history")
	if h.Status != http.StatusOK || !strings.Contains(h.Body, "<svg") || !strings.Contains(h.Body, "task.approved") {
		t.Fatalf("history: %d\n%s", h.Status, h.Body)
	}
	// The chart of the one task: one credential, one refusal, in the
	// last period of the window.
	h = carol.get("/ui/history?task_id=" + id)
	if !strings.Contains(h.Body, "1 credentials issued") || !strings.Contains(h.Body, "1 requests refused") ||
		strings.Count(h.Body, `class="bar-issued"`) != 24 {
		t.Fatalf("history: %d\n%s", h.Status, h.Body)
	}
	if r := carol.get("/ui/history?view=refusals"); !strings.Contains(r.Body, "scope_exceeds_approval") || strings.Contains(r.Body, "<td>task.approved</td>") {
		t.Fatalf("refusals:\n%s", r.Body)
	}
	if r := carol.get("/ui/history?view=credentials"); !strings.Contains(r.Body, "github.repo.read:acme/api") {
		t.Fatalf("credentials:\n%s", r.Body)
	}
	tl := carol.get("/ui/history?task_id=" + id)
	if !strings.Contains(tl.Body, `id="timeline"`) || !strings.Contains(tl.Body, "task.created") || !strings.Contains(tl.Body, "credential.issued") {
		t.Fatalf("timeline:\n%s", tl.Body)
	}
	if r := carol.get("/ui/history"); !strings.Contains(r.Body, "(the last 24 hours)") || strings.Contains(tl.Body, "(the last 24 hours)") {
		t.Fatalf("the lists' default window (none with a task) is not said:\n%s", r.Body)
	}
	if r := carol.get("/ui/history?since=2000-01-01T00:00"); strings.Contains(r.Body, "(the last 24 hours)") || !strings.Contains(r.Body, "task.created") {
		t.Fatalf("an explicit since:\n%s", r.Body)
	}
	if r := carol.get("/ui/history?bogus=1"); r.Status != http.StatusBadRequest {
		t.Fatalf("unknown filter: %d", r.Status)
	}
	apiStatus, apiOut := e.rest("GET", "/v1/audit/events", e.userToken("alice", "eng"), nil)
	if r := alice.get("/ui/history"); r.Status != apiStatus || !strings.Contains(r.Body, apiOut["code"].(string)) {
		t.Fatalf("a non-auditor: page %d, API %d %v", r.Status, apiStatus, apiOut)
	}
}

// The pages hold a person to the API's per-principal rate limit, one
// bucket for their pages and their API calls alike.
func TestPagesShareTheAPIsRateLimit(t *testing.T) {
	e := newEnv(t, func(c *httpapi.Config) { c.RateLimits.PerPrincipal = 0.01 }) // a burst of one request
	alice := e.signIn("alice", "eng")
	if r := alice.get("/ui/"); r.Status != http.StatusOK {
		t.Fatalf("first page: %d", r.Status)
	}
	r := alice.get("/ui/")
	if r.Status != http.StatusTooManyRequests || !strings.Contains(r.Body, "rate_limited") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second page: %d %q\n%s", r.Status, r.Header.Get("Retry-After"), r.Body)
	}
	if st, out := e.rest("GET", "/v1/tasks", e.userToken("alice", "eng"), nil); st != http.StatusTooManyRequests {
		t.Fatalf("the API after the pages spent the bucket: %d %v", st, out)
	}
	if r := e.signIn("bob", "eng").get("/ui/"); r.Status != http.StatusOK {
		t.Fatalf("another person: %d", r.Status)
	}
}
