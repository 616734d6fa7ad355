package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/notify"
)

// scrape reads a server's /metrics into sample name (with its labels) →
// value, and the set of metric names it exposes.
func scrape(t *testing.T, base string) (map[string]float64, map[string]bool) {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	samples, names := map[string]float64{}, map[string]bool{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		samples[l[:i]] = v
		names[strings.SplitN(l[:i], "{", 2)[0]] = true
	}
	return samples, names
}

// waitMetric polls /metrics until sample has want, for metrics that a
// worker updates after the request that caused them.
func waitMetric(t *testing.T, base, sample string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := scrape(t, base)
		if v, found := s[sample]; found && ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v after 10 s", sample, s[sample])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetricsForDashboardsAndAlerts walks a flow on `serve` (PostgreSQL)
// and reads what the dashboard and the alert rules chart: pending tasks
// counted from the database, approval latency by decision, revocation
// lag as the replica's cache applies a close, refusals, the audit anchor.
// Then every metric the rules and the dashboard name must be one the
// server exports.
func TestMetricsForDashboardsAndAlerts(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	// A webhook, whose receiver accepts one notification and refuses the
	// rest: its metrics count both.
	var calls atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) > 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer hook.Close()
	path := writeConfig(t, testpg.NewDatabase(t), agents, users, resources)
	secret := filepath.Join(filepath.Dir(path), "hook.secret")
	if err := os.WriteFile(secret, []byte("whsec_"+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 32)))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "notifications:\n  webhooks:\n    - {url: %q, secret_file: %q, events: [task.created]}\n", hook.URL, secret)
	f.Close()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := startServe(t, cfg, nil)
	base := "http://" + addr
	agent := agents.Token(t, "ci-bot", "errand", nil)
	user := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	newTask := func() string {
		task := callJSON(t, base, "POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "read acme/api",
			"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})
		return task["id"].(string)
	}

	a, b := newTask(), newTask()
	// The count is read at most every app.PendingEvery: wait out the first one.
	time.Sleep(app.PendingEvery)
	waitMetric(t, base, "errand_tasks_pending", func(v float64) bool { return v == 2 })
	if s, _ := scrape(t, base); s["errand_step_ups_pending"] != 0 {
		t.Fatalf("errand_step_ups_pending = %v, want 0", s["errand_step_ups_pending"])
	}

	callJSON(t, base, "POST", "/v1/tasks/"+a+"/approve", user, map[string]any{"scopes": []string{"github.repo.read:acme/api"}})
	callJSON(t, base, "POST", "/v1/tasks/"+b+"/deny", user, map[string]any{"reason": "not today"})
	s, _ := scrape(t, base)
	for _, d := range []string{"approved", "denied"} {
		if n := s[`errand_approval_seconds_count{decision="`+d+`",kind="task"}`]; n != 1 {
			t.Errorf("errand_approval_seconds_count for a task %s: %v, want 1", d, n)
		}
		if n := s[`errand_approval_seconds_bucket{decision="`+d+`",kind="task",le="+Inf"}`]; n != 1 {
			t.Errorf("errand_approval_seconds_bucket +Inf for a task %s: %v, want 1", d, n)
		}
	}
	time.Sleep(app.PendingEvery)
	waitMetric(t, base, "errand_tasks_pending", func(v float64) bool { return v == 0 })

	callJSON(t, base, "POST", "/v1/tasks/"+a+"/tokens", agent, map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})
	// A scope the task was not approved for: refused, and counted by code.
	req, _ := http.NewRequest("POST", base+"/v1/tasks/"+a+"/tokens",
		strings.NewReader(`{"scopes":["github.pr.write:acme/api"],"audience":"https://api.github.com"}`))
	req.Header.Set("Authorization", "Bearer "+agent)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var problem struct{ Code string }
	_ = json.NewDecoder(res.Body).Decode(&problem)
	res.Body.Close()
	if res.StatusCode < 400 || problem.Code == "" {
		t.Fatalf("a mint beyond the approval: %d %+v, want a refusal", res.StatusCode, problem)
	}
	if s, _ := scrape(t, base); s[`errand_refusals_total{code="`+problem.Code+`"}`] < 1 {
		t.Errorf("errand_refusals_total{code=%q} not counted", problem.Code)
	}

	// Closing the task revokes its token: the cache applies the feed and
	// observes how long after the commit.
	callJSON(t, base, "POST", "/v1/tasks/"+a+"/close", agent, nil)
	waitMetric(t, base, "errand_revocation_lag_seconds_count", func(v float64) bool { return v >= 1 })
	s, names := scrape(t, base)
	if lag := s["errand_revocation_lag_seconds_sum"] / s["errand_revocation_lag_seconds_count"]; lag < 0 || lag > 5 {
		t.Errorf("mean revocation lag %v s: the cache applies a close within its beat", lag)
	}
	if at := s["errand_audit_anchor_timestamp_seconds"]; at < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("errand_audit_anchor_timestamp_seconds = %v: serve logs an anchor as it starts", at)
	}
	if every := s["errand_audit_anchor_interval_seconds"]; every != cfg.AnchorInterval().Seconds() {
		t.Errorf("errand_audit_anchor_interval_seconds = %v, want %v", every, cfg.AnchorInterval().Seconds())
	}
	key := notify.KeyOf(hook.URL)
	waitMetric(t, base, `errand_webhook_attempts_total{result="error",webhook="`+key+`"}`, func(v float64) bool { return v >= 1 })
	s, names = scrape(t, base)
	if s[`errand_webhook_attempts_total{result="ok",webhook="`+key+`"}`] != 1 || !names["errand_webhook_failed_total"] {
		t.Errorf("webhook metrics: ok %v, failed exported %v", s[`errand_webhook_attempts_total{result="ok",webhook="`+key+`"}`], names["errand_webhook_failed_total"])
	}
	if s[`errand_backend_revoke_failed_total{kind="vault"}`] != 0 || !names["errand_backend_revoke_failed_total"] {
		t.Error("errand_backend_revoke_failed_total should be exported at 0 from the start")
	}

	for file, exprs := range deployExpressions(t) {
		for _, e := range exprs {
			for _, name := range metricName.FindAllString(e, -1) {
				if !names[name] {
					t.Errorf("%s: %s is not a metric Errand exports (in %q)", file, name, e)
				}
			}
		}
	}
}

// metricName matches the metrics Errand exports (and the Go and process
// collectors' beside them) in a PromQL expression.
var metricName = regexp.MustCompile(`\b(errand|go|process)_[a-z0-9_]+\b`)

// deployExpressions are the PromQL expressions of deploy/prometheus's
// rules and deploy/grafana's dashboards, by file.
func deployExpressions(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	rules, _ := filepath.Glob("../../deploy/prometheus/*.yaml")
	for _, f := range rules {
		if strings.HasSuffix(f, "_test.yaml") {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Groups []struct {
				Rules []struct{ Expr string } `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range doc.Groups {
			for _, r := range g.Rules {
				out[f] = append(out[f], r.Expr)
			}
		}
	}
	dashboards, _ := filepath.Glob("../../deploy/grafana/*.json")
	for _, f := range dashboards {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, x := range v {
					if s, ok := x.(string); ok && k == "expr" {
						out[f] = append(out[f], s)
					}
					walk(x)
				}
			case []any:
				for _, x := range v {
					walk(x)
				}
			}
		}
		walk(doc)
	}
	if len(out) < 2 {
		t.Fatalf("expressions from %v, want the rules and the dashboard", out)
	}
	for f, exprs := range out {
		if len(exprs) == 0 {
			t.Fatalf("%s: no expressions", f)
		}
	}
	return out
}

// TestDashboardQueriesParse checks every dashboard query with promtool
// (as a rule, Grafana's $__rate_interval read as 5m): a query Prometheus
// would refuse shows an empty panel, not an error, in Grafana.
func TestDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is required under CI=true (Debian: apt-get install prometheus)")
		}
		t.Skip("promtool not found (Debian: apt-get install prometheus); under CI=true this fails")
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for f, exprs := range deployExpressions(t) {
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		for _, e := range exprs {
			n++
			e = strings.ReplaceAll(e, "$__rate_interval", "5m")
			q, _ := json.Marshal(e)
			rules.WriteString("      - record: dashboard:q" + strconv.Itoa(n) + "\n        expr: " + string(q) + "\n")
		}
	}
	p := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(p, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", p).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the dashboard's %d queries: %v\n%s", n, err, out)
	}
}

// TestKubernetesConfigMapIsAValidConfig: the errand.yaml that
// deploy/kubernetes mounts passes Errand's own validation once the Secret
// supplies system_secret and database_url, and it does not move listen
// off the address the pod's probes and Service use.
func TestKubernetesConfigMapIsAValidConfig(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"ERRAND_SYSTEM_SECRET": strings.Repeat("s", 48),
		"ERRAND_DATABASE_URL":  "postgres://errand_login@db:5432/errand?sslmode=verify-full",
	}
	cfg, err := config.Parse([]byte(cm.Data["errand.yaml"]), func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("deploy/kubernetes/configmap.yaml's errand.yaml: %v", err)
	}
	if cfg.Listen != "127.0.0.1:8080" {
		t.Errorf("listen: %s in the ConfigMap; the pods take theirs from ERRAND_LISTEN", cfg.Listen)
	}
	if cfg.AnchorInterval() <= 0 {
		t.Error("audit anchors are off, and ErrandAuditAnchorMissing would never fire")
	}
}
