package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
)

// TestLogsNeverHoldSecrets runs a whole flow on serve's JSON logs and
// greps them for every token, the system secret and the database
// password; each request has one line with its id, principal, task and
// status.
func TestLogsNeverHoldSecrets(t *testing.T) {
	const secret = "system-secret-canary-0123456789abcdef"
	const dbPassword = "db-password-canary-42"
	t.Setenv("ERRAND_SYSTEM_SECRET", secret)
	u, err := url.Parse(testpg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), dbPassword) // trust auth ignores it
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	cfg, err := config.Load(writeConfig(t, u.String(), agents, users, resources))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	addr, stop := startServe(t, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	base := "http://" + addr

	agent := agents.Token(t, "ci-bot", "errand", nil)
	user := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers", "security-auditors"}})
	rs := resources.Token(t, "gw", "errand", nil)
	id := callJSON(t, base, "POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "g",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})["id"].(string)
	callJSON(t, base, "POST", "/v1/tasks/"+id+"/approve", user, map[string]any{})
	var minted []string
	for i := 0; i < 3; i++ {
		minted = append(minted, callJSON(t, base, "POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})["access_token"].(string))
	}
	callJSON(t, base, "POST", "/v1/introspect", rs, url.Values{"token": {minted[0]}})
	// A refusal: an access token presented as identity.
	raw, _ := json.Marshal(map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})
	hr, _ := http.NewRequest("POST", base+"/v1/tasks/"+id+"/tokens", bytes.NewReader(raw))
	hr.Header.Set("Authorization", "Bearer "+minted[1])
	hr.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("an access token as identity: %d", res.StatusCode)
	}
	callJSON(t, base, "POST", "/v1/tasks/"+id+"/close", agent, nil)
	callJSON(t, base, "GET", "/v1/audit/events?task_id="+id, user, nil)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	for name, s := range map[string]string{"system secret": secret, "database password": dbPassword,
		"agent ID token": agent, "user ID token": user, "resource ID token": rs} {
		if strings.Contains(out, s) {
			t.Errorf("the logs hold the %s", name)
		}
	}
	for i, tok := range minted {
		if strings.Contains(out, tok) || strings.Contains(out, strings.Split(tok, ".")[2]) {
			t.Errorf("the logs hold minted token %d", i)
		}
	}
	// One line per request, with its id, principal, task and status.
	var lines, withTask int
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			t.Fatalf("a log line is not JSON: %s", l)
		}
		if m["msg"] != "request" {
			continue
		}
		lines++
		if m["request_id"] == "" || m["status"] == nil || m["duration_ms"] == nil {
			t.Fatalf("a request line lacks its id, status or duration: %s", l)
		}
		if m["task_id"] == id {
			withTask++
			if m["route"] != "/v1/audit/events" && !strings.Contains(m["principal"].(string), "#") && m["code"] != "token_not_accepted" {
				t.Fatalf("a task request line lacks its principal: %s", l)
			}
		}
	}
	if lines < 9 || withTask < 7 {
		t.Fatalf("%d request lines, %d naming the task:\n%s", lines, withTask, out)
	}
	if !strings.Contains(out, `"code":"token_not_accepted"`) {
		t.Fatalf("the refusal's line has no code:\n%s", out)
	}
}
