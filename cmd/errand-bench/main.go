// Command errand-bench is Errand's load generator. It starts a real
// `errand serve` on a fresh PostgreSQL database, with its own identity
// provider (real signed ID tokens, OIDC discovery and JWKS), drives it over
// HTTP with keep-alive connections, and reports throughput, latency
// percentiles, errors and — read from /proc for the Errand process and
// every PostgreSQL process — CPU µs per operation and peak RSS.
//
//	go build -o /tmp/errand ./cmd/errand && go build -o /tmp/errand-bench ./cmd/errand-bench
//	/tmp/errand-bench --errand /tmp/errand --database-url postgres://postgres@127.0.0.1:5432/postgres \
//	    --scenario mint -c 32 -d 10s
//
// Scenarios: mint (approved tasks, one per agent, many agents), rotate
// (mint while `errand keys rotate` runs --rounds times; every token is
// verified against the JWKS served right after it was minted), introspect
// (active tokens), evaluate (AuthZEN decisions with the policies, Cedar or,
// with --policy-engine opa, Rego), close
// (a task with --creds live credentials closed, then every one introspected
// inactive; repeated --rounds times) and mixed (per iteration: one mint, ten
// introspections, one evaluation). floor serves the introspect
// scenario's requests from a do-nothing Go HTTP server of its own (see
// floor.go): the machine's floor for that request, in CPU and latency.
//
// --against B runs the loop scenarios on a second server of binary B too,
// the two taking turns in --slice slices, and reports both and the median
// ratio of their CPU per operation over the pairs of slices: runs one
// after the other cannot resolve 10 % on a VM whose speed drifts.
//
// --hold D runs no scenario: it keeps the server and its fixtures up for D
// and writes a wrk script that introspects the active tokens, so that a
// load generator lighter than this tool's Go client can measure latency;
// with --scenario floor it holds the floor server instead.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/internal/devidp"
)

type options struct {
	errand, dbURL, scenario, jsonOut, policies string
	// engine is the server's policy_engine: cedar or opa; againstEngine
	// the --against server's (default engine).
	engine, againstEngine              string
	against                            string
	concurrency, agents, creds, rounds int
	duration, warmup, hold, slice      time.Duration
	keep                               bool
	maxErrors                          int64
	prefill                            int
}

func main() {
	if os.Getenv(floorEnv) != "" {
		if err := serveFloor(); err != nil {
			fmt.Fprintln(os.Stderr, "errand-bench floor server:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.errand, "errand", "errand", "the errand binary to start")
	flag.StringVar(&o.dbURL, "database-url", os.Getenv("ERRAND_BENCH_DATABASE_URL"), "a PostgreSQL server URL; a fresh database is created on it")
	flag.StringVar(&o.scenario, "scenario", "mint", "mint, exchange, introspect, evaluate, close, mixed, rotate or floor (comma-separated)")
	flag.IntVar(&o.concurrency, "c", 32, "concurrent clients")
	flag.DurationVar(&o.duration, "d", 10*time.Second, "measured duration (mint, introspect, evaluate, mixed, floor)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up before the measured run")
	flag.IntVar(&o.agents, "agents", 32, "agents, each with its own approved task")
	flag.IntVar(&o.creds, "creds", 1000, "close: live credentials of the task closed")
	flag.IntVar(&o.rounds, "rounds", 5, "close: tasks closed; rotate: key rotations during the run")
	flag.StringVar(&o.policies, "policies", "", "policy files (glob) for the server, of --policy-engine; default a built-in set of 4")
	flag.StringVar(&o.engine, "policy-engine", "cedar", "the server's policy_engine: cedar, or opa (the built-in set in Rego)")
	flag.StringVar(&o.againstEngine, "against-policy-engine", "", "--against: that server's policy_engine (default --policy-engine); --against may name the same binary, to compare the engines")
	flag.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file (- for stdout)")
	flag.BoolVar(&o.keep, "keep", false, "keep the database and the server's log")
	flag.StringVar(&o.against, "against", "", "a second errand binary: run the scenarios on both, in alternating slices, and compare")
	flag.DurationVar(&o.slice, "slice", 2*time.Second, "--against: how long each server is driven before the other's turn")
	flag.DurationVar(&o.hold, "hold", 0, "run no scenario: keep the server and its fixtures up this long, and write a wrk script for introspection")
	flag.Int64Var(&o.maxErrors, "max-errors", 0, "exit 1 when more requests than this failed")
	flag.IntVar(&o.prefill, "prefill", 0, "store this many past credentials and audit events (over prefill/100 closed tasks) before the run, for scale checks")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "errand-bench:", err)
		os.Exit(1)
	}
}

// Report is one scenario's result.
type Report struct {
	Scenario    string  `json:"scenario"`
	Binary      string  `json:"binary,omitempty"` // --against: which server; "floor" for the floor scenario
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Ops         int64   `json:"ops"`
	Errors      int64   `json:"errors"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	Maxms       float64 `json:"max_ms"`
	// CPU µs per operation, of the Errand process and of PostgreSQL (every
	// postgres process of the machine) during the measured run.
	ErrandCPUus   float64 `json:"errand_cpu_us_per_op"`
	PostgresCPUus float64 `json:"postgres_cpu_us_per_op"`
	TotalCPUus    float64 `json:"total_cpu_us_per_op"`
	ErrandPeakRSS int64   `json:"errand_peak_rss_kib"`
	FirstError    string  `json:"first_error,omitempty"`
	// Close only: time from the close request until every credential
	// introspects inactive, per round.
	InactiveP50ms float64 `json:"inactive_p50_ms,omitempty"`
	InactiveMaxms float64 `json:"inactive_max_ms,omitempty"`
	// Prefilled is how many past credentials and audit events were stored
	// before the run.
	Prefilled int `json:"prefilled"`
}

func run(o options) error {
	if o.dbURL == "" {
		return errors.New("--database-url (or ERRAND_BENCH_DATABASE_URL) is required")
	}
	if o.hold > 0 && o.scenario != "floor" {
		o.scenario = "introspect" // its fixtures: active tokens for the script
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := start(ctx, o)
	if err != nil {
		return err
	}
	defer b.stop()
	if o.hold > 0 {
		return b.hold(o)
	}
	var reports []Report
	if o.against != "" {
		reports, err = compare(ctx, o, b)
	} else {
		reports, err = b.scenarios(o)
	}
	if err != nil {
		return err
	}
	if o.jsonOut != "" {
		var v any = reports
		if len(reports) == 1 {
			v = reports[0]
		}
		raw, _ := json.MarshalIndent(v, "", "  ")
		if o.jsonOut == "-" {
			fmt.Println(string(raw))
		} else if err := os.WriteFile(o.jsonOut, append(raw, '\n'), 0o644); err != nil {
			return err
		}
	}
	for _, rep := range reports {
		if rep.Errors > o.maxErrors {
			return fmt.Errorf("%s: %d requests failed (--max-errors %d)", rep.Scenario, rep.Errors, o.maxErrors)
		}
	}
	return nil
}

// loopOps are the scenarios that repeat one operation, run by loop and
// by --against.
var loopOps = map[string]func(*bench, int) error{
	"mint":       (*bench).mintOp,
	"exchange":   (*bench).exchangeOp,
	"introspect": (*bench).introspectOp,
	"evaluate":   (*bench).evaluateOp,
	"mixed":      (*bench).mixedOp,
}

// bind is op run by b's workers.
func (b *bench) bind(op func(*bench, int) error) func(int) error {
	return func(w int) error { return op(b, w) }
}

// scenarios runs the comma-separated scenarios one after the other on
// the same server and database (the fixtures of all are made at start).
func (b *bench) scenarios(o options) ([]Report, error) {
	var reports []Report
	for _, sc := range strings.Split(o.scenario, ",") {
		var (
			rep Report
			err error
		)
		server := b.cmd
		op, isLoop := loopOps[sc]
		switch {
		case isLoop:
			rep, err = b.loop(o, sc, b.cmd, b.bind(op))
		case sc == "floor":
			var f *floorServer
			if f, err = b.floor(); err == nil {
				server = f.cmd
				rep, err = b.loop(o, "floor", server, b.floorOp)
				rep.Binary = "floor"
			}
		case sc == "close":
			rep, err = b.closeScenario(o)
		case sc == "rotate":
			rep, err = b.rotateScenario(o)
		default:
			return nil, fmt.Errorf("unknown scenario %q", sc)
		}
		if err != nil {
			return nil, err
		}
		rep.ErrandPeakRSS = peakRSS(server.Process.Pid)
		rep.Prefilled = o.prefill
		printReport(os.Stdout, rep)
		reports = append(reports, rep)
	}
	return reports, nil
}

func printReport(w io.Writer, r Report) {
	fmt.Fprintf(w, "scenario %s, c=%d, %.1f s: %d ops, %d errors\n", r.Scenario, r.Concurrency, r.Seconds, r.Ops, r.Errors)
	if r.Scenario == "floor" {
		fmt.Fprintln(w, "(the errand columns are the floor server's: net/http and chi, no Errand)")
	}
	fmt.Fprintf(w, "%-12s %-9s %-9s %-9s %-9s %-14s %-14s %-14s %s\n",
		"ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errand µs/op", "postgres µs/op", "total µs/op", "errand peak RSS")
	fmt.Fprintf(w, "%-12.0f %-9.2f %-9.2f %-9.2f %-9.2f %-14.0f %-14.0f %-14.0f %d MiB\n",
		r.OpsPerSec, r.P50ms, r.P90ms, r.P99ms, r.Maxms, r.ErrandCPUus, r.PostgresCPUus, r.TotalCPUus, r.ErrandPeakRSS/1024)
	if r.InactiveMaxms > 0 {
		fmt.Fprintf(w, "close → every credential inactive: p50 %.1f ms, max %.1f ms\n", r.InactiveP50ms, r.InactiveMaxms)
	}
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}

// bench is a running Errand with its identity provider and the fixtures of
// a scenario.
type bench struct {
	engine  string // the server's policy_engine
	base    string
	idp     *devidp.Provider
	idpSrv  *http.Server
	cmd     *exec.Cmd
	dir     string
	dbName  string
	adminDB string
	keep    bool
	client  *http.Client
	// floorSrv is the floor scenario's server, once started.
	floorSrv *floorServer

	cfgPath   string
	errandBin string

	agents    []string // ID tokens
	tasks     []string // one approved task per agent
	alice, rs string
	tokens    []string // access tokens for introspect/evaluate
	tokenSeq  atomic.Int64
}

const (
	audience  = "https://api.example.com"
	benchPolw = `@id("allow") permit (principal, action, resource);
@id("no-shell") forbid (principal, action, resource) when { context.tool == "shell" };
@id("no-pii") forbid (principal, action, resource) when { context.dataset like "pii/*" };
@id("prod-admin") forbid (principal, action, resource) when { context.environment == "prod" && context.class == "admin" };
`
	// benchRego is benchPolw in Rego, rule for rule.
	benchRego = `package errand

allow contains "allow"

deny contains "no-shell" if input.context.tool == "shell"

deny contains "no-pii" if startswith(input.context.dataset, "pii/")

deny contains "prod-admin" if {
	input.context.environment == "prod"
	input.context.class == "admin"
}
`
)

func start(ctx context.Context, o options) (*bench, error) {
	b := &bench{keep: o.keep, adminDB: o.dbURL, engine: o.engine}
	var err error
	if b.dir, err = os.MkdirTemp("", "errand-bench-"); err != nil {
		return nil, err
	}
	// The identity provider: OIDC discovery, JWKS and signed ID tokens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	if b.idp, err = devidp.New("http://"+ln.Addr().String(), seed); err != nil {
		return nil, err
	}
	b.idpSrv = &http.Server{Handler: b.idp.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.idpSrv.Serve(ln) }()

	dbURL, err := b.createDB(ctx)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b.base = "http://127.0.0.1:" + port
	policies := o.policies
	if o.engine != "cedar" && o.engine != "opa" {
		return nil, fmt.Errorf("--policy-engine: cedar or opa, not %q", o.engine)
	}
	if policies == "" {
		name, text := "bench.cedar", benchPolw
		if o.engine == "opa" {
			name, text = "bench.rego", benchRego
		}
		policies = filepath.Join(b.dir, "*"+filepath.Ext(name))
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`listen: 127.0.0.1:%s
public_url: %s
database_url: %s
system_secret: %s
audit_anchor_every: "off"
issuers:
  - {url: %q, audience: errand, kind: agent, algorithms: [EdDSA]}
  - {url: %q, audience: errand, kind: user, algorithms: [EdDSA], groups_claim: groups}
  - {url: %q, audience: errand, kind: resource, algorithms: [EdDSA]}
actions:
  - {name: repo.read, class: read, risk: low}
  - {name: repo.write, class: write, risk: medium}
grants:
  - {group: eng, scopes: ["repo.read:acme/**", "repo.write:acme/**"]}
audiences:
  - {url: %q, environment: staging, any_introspector: true}
limits: {token_ttl_max: 5m, task_ttl_max: 8h, principal_rps: 1000000, address_rps: 1000000, pending_tasks_per_agent: 100000}
policy_engine: %s
policies: [%q]
`, port, b.base, dbURL, hex.EncodeToString(seed), b.idp.IssuerURL("agent"), b.idp.IssuerURL("user"),
		b.idp.IssuerURL("resource"), audience, o.engine, policies)
	cfgPath := filepath.Join(b.dir, "errand.yaml")
	b.cfgPath, b.errandBin = cfgPath, o.errand
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(b.dir, "errand.log"))
	if err != nil {
		return nil, err
	}
	if o.prefill > 0 {
		if out, err := exec.Command(o.errand, "migrate", "--config", cfgPath).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("migrate: %v: %s", err, out)
		}
		t0 := time.Now()
		if err := prefill(ctx, dbURL, o.prefill); err != nil {
			return nil, fmt.Errorf("prefill: %w", err)
		}
		fmt.Fprintf(os.Stderr, "prefilled %d credentials and %d audit events in %s\n", o.prefill, o.prefill, time.Since(t0).Round(time.Second))
	}
	b.cmd = exec.Command(o.errand, "serve", "--config", cfgPath)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.errand, err)
	}
	b.client = &http.Client{Transport: &http.Transport{MaxIdleConns: 4 * o.concurrency, MaxIdleConnsPerHost: 4 * o.concurrency}, Timeout: 30 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := b.client.Get(b.base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, fmt.Errorf("errand did not become ready; see %s", logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b, b.fixtures(o)
}

func (b *bench) stop() {
	if b.floorSrv != nil {
		b.floorSrv.stop()
	}
	if b.cmd != nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		_ = b.cmd.Wait()
	}
	if b.idpSrv != nil {
		_ = b.idpSrv.Close()
	}
	if b.keep {
		fmt.Fprintf(os.Stderr, "kept: database %s, config and log in %s\n", b.dbName, b.dir)
		return
	}
	if b.dbName != "" {
		if conn, err := pgx.Connect(context.Background(), b.adminDB); err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{b.dbName}.Sanitize()+" WITH (FORCE)")
			_ = conn.Close(context.Background())
		}
	}
	_ = os.RemoveAll(b.dir)
}

func (b *bench) createDB(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, b.adminDB)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var r [6]byte
	_, _ = rand.Read(r[:])
	b.dbName = "errand_bench_" + hex.EncodeToString(r[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{b.dbName}.Sanitize()); err != nil {
		return "", err
	}
	u, err := url.Parse(b.adminDB)
	if err != nil {
		return "", err
	}
	u.Path = "/" + b.dbName
	return u.String(), nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

func (b *bench) idToken(kind, sub string, groups ...string) string {
	tok, err := b.idp.Issue(devidp.TokenRequest{Kind: kind, Sub: sub, Groups: groups})
	if err != nil {
		panic(err)
	}
	return tok
}

// fixtures: one approved task per agent, and a pool of access tokens.
func (b *bench) fixtures(o options) error {
	b.alice, b.rs = b.idToken("user", "alice", "eng"), b.idToken("resource", "gateway")
	for i := 0; i < o.agents; i++ {
		agent := b.idToken("agent", fmt.Sprintf("agent-%d", i))
		id, err := b.approvedTask(agent)
		if err != nil {
			return err
		}
		b.agents, b.tasks = append(b.agents, agent), append(b.tasks, id)
	}
	for i := 0; i < 256 && o.scenario != "mint" && o.scenario != "close"; i++ {
		var out struct {
			AccessToken string `json:"access_token"`
		}
		k := i % len(b.tasks)
		if err := b.call("POST", "/v1/tasks/"+b.tasks[k]+"/tokens", b.agents[k], mintBody, 201, &out); err != nil {
			return err
		}
		b.tokens = append(b.tokens, out.AccessToken)
	}
	return nil
}

var mintBody = map[string]any{"scopes": []string{"repo.read:acme/api"}, "audience": audience}

func (b *bench) approvedTask(agent string) (string, error) {
	var t struct{ ID string }
	if err := b.call("POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "benchmark",
		"scopes": []string{"repo.read:acme/**"}, "audiences": []string{audience}, "ttl_seconds": 28800}, 201, &t); err != nil {
		return "", err
	}
	if err := b.call("POST", "/v1/tasks/"+t.ID+"/approve", b.alice, map[string]any{}, 200, nil); err != nil {
		return "", err
	}
	return t.ID, nil
}

// call sends one request and checks its status; body is JSON, or a form
// for url.Values.
func (b *bench) call(method, path, token string, body any, want int, out any) error {
	return b.callAt(b.base, method, path, token, body, want, out)
}

// callAt is call on the server at base.
func (b *bench) callAt(base, method, path, token string, body any, want int, out any) error {
	var rd io.Reader
	ct := "application/json"
	switch v := body.(type) {
	case nil:
	case url.Values:
		rd, ct = strings.NewReader(v.Encode()), "application/x-www-form-urlencoded"
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, strings.TrimSpace(string(raw)))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// The operations; worker w runs them with its own agent.

func (b *bench) mintOp(w int) error {
	k := w % len(b.tasks)
	return b.call("POST", "/v1/tasks/"+b.tasks[k]+"/tokens", b.agents[k], mintBody, 201, nil)
}

// exchangeOp mints the same token as mintOp through the OAuth front
// door: an RFC 8693 token exchange naming the task in errand_task
// authorization details, the agent's ID token as subject and client.
func (b *bench) exchangeOp(w int) error {
	k := w % len(b.tasks)
	return b.call("POST", "/oauth/token", b.agents[k], url.Values{
		"grant_type":            {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":         {b.agents[k]},
		"subject_token_type":    {"urn:ietf:params:oauth:token-type:id_token"},
		"authorization_details": {`[{"type":"errand_task","task_id":"` + b.tasks[k] + `"}]`},
		"scope":                 {"repo.read:acme/api"},
		"resource":              {audience},
	}, 200, nil)
}

func (b *bench) nextToken() string {
	return b.tokens[int(b.tokenSeq.Add(1))%len(b.tokens)]
}

func (b *bench) introspectOp(int) error {
	var out struct{ Active bool }
	if err := b.call("POST", "/v1/introspect", b.rs, url.Values{"token": {b.nextToken()}}, 200, &out); err != nil {
		return err
	}
	if !out.Active {
		return errors.New("an active token introspected inactive")
	}
	return nil
}

func (b *bench) evaluateOp(int) error {
	var out struct{ Decision bool }
	body := map[string]any{
		"subject":  map[string]any{"type": "errand_token", "id": b.nextToken()},
		"action":   map[string]any{"name": "repo.read"},
		"resource": map[string]any{"type": "repository", "id": "acme/api"},
		"context":  map[string]any{"tool": "git"},
	}
	if err := b.call("POST", "/access/v1/evaluation", b.rs, body, 200, &out); err != nil {
		return err
	}
	if !out.Decision {
		return errors.New("an allowed evaluation answered false")
	}
	return nil
}

// mixedOp is one mint, ten introspections and one evaluation: counted as
// twelve operations.
func (b *bench) mixedOp(w int) error {
	if err := b.mintOp(w); err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		if err := b.introspectOp(w); err != nil {
			return err
		}
	}
	return b.evaluateOp(w)
}

func opsPer(scenario string) int64 {
	if scenario == "mixed" {
		return 12
	}
	return 1
}

// loop runs op on c workers for the warm-up, then for the measured run;
// the CPU counted is server's and PostgreSQL's.
func (b *bench) loop(o options, name string, server *exec.Cmd, op func(int) error) (Report, error) {
	if o.warmup > 0 {
		b.drive(o.concurrency, o.warmup, op)
	}
	before := cpuSnapshot(server.Process.Pid)
	start := time.Now()
	lat, errs, first := b.drive(o.concurrency, o.duration, op)
	elapsed := time.Since(start)
	after := cpuSnapshot(server.Process.Pid)
	rep := summarize(name, o.concurrency, elapsed, lat, errs, first)
	rep.perOp(len(lat), elapsed, after.errand-before.errand, after.postgres-before.postgres)
	return rep, nil
}

// perOp sets the counts, rate and CPU per operation of n iterations run
// in elapsed, which cost the Errand process errand and PostgreSQL pg.
func (rep *Report) perOp(n int, elapsed, errand, pg time.Duration) {
	rep.Ops = int64(n) * opsPer(rep.Scenario)
	rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	if rep.Ops > 0 {
		rep.ErrandCPUus = errand.Seconds() * 1e6 / float64(rep.Ops)
		rep.PostgresCPUus = pg.Seconds() * 1e6 / float64(rep.Ops)
		rep.TotalCPUus = rep.ErrandCPUus + rep.PostgresCPUus
	}
}

// drive runs op on c workers for d and returns every successful latency.
func (b *bench) drive(c int, d time.Duration, op func(int) error) ([]time.Duration, int64, string) {
	var (
		mu     sync.Mutex
		all    []time.Duration
		errs   atomic.Int64
		first  atomic.Value
		wg     sync.WaitGroup
		cutoff = time.Now().Add(d)
	)
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(cutoff) {
				t0 := time.Now()
				if err := op(w); err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	f, _ := first.Load().(string)
	return all, errs.Load(), f
}

func summarize(name string, c int, elapsed time.Duration, lat []time.Duration, errs int64, first string) Report {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	return Report{Scenario: name, Concurrency: c, Seconds: elapsed.Seconds(), Errors: errs, FirstError: first,
		P50ms: pct(0.50), P90ms: pct(0.90), P99ms: pct(0.99), Maxms: pct(1)}
}

// closeScenario: a task with o.creds live credentials is closed; the
// close's latency is the operation, and the time until every one of its
// credentials introspects inactive is reported too.
func (b *bench) closeScenario(o options) (Report, error) {
	var closes, inactive []time.Duration
	var cpu time.Duration
	var pg time.Duration
	for r := 0; r < o.rounds; r++ {
		agent := b.agents[0]
		id, err := b.approvedTask(agent)
		if err != nil {
			return Report{}, err
		}
		toks := make([]string, o.creds)
		if err := forEach(o.concurrency, o.creds, func(i int) error {
			var out struct {
				AccessToken string `json:"access_token"`
			}
			if err := b.call("POST", "/v1/tasks/"+id+"/tokens", agent, mintBody, 201, &out); err != nil {
				return err
			}
			toks[i] = out.AccessToken
			return nil
		}); err != nil {
			return Report{}, err
		}
		before := cpuSnapshot(b.cmd.Process.Pid)
		t0 := time.Now()
		if err := b.call("POST", "/v1/tasks/"+id+"/close", agent, nil, 200, nil); err != nil {
			return Report{}, err
		}
		closes = append(closes, time.Since(t0))
		after := cpuSnapshot(b.cmd.Process.Pid)
		cpu += after.errand - before.errand
		pg += after.postgres - before.postgres
		// Every credential must now introspect inactive.
		var stillActive atomic.Int64
		_ = forEach(o.concurrency, len(toks), func(i int) error {
			var out struct{ Active bool }
			if err := b.call("POST", "/v1/introspect", b.rs, url.Values{"token": {toks[i]}}, 200, &out); err != nil || out.Active {
				stillActive.Add(1)
			}
			return nil
		})
		inactive = append(inactive, time.Since(t0))
		if n := stillActive.Load(); n > 0 {
			return Report{}, fmt.Errorf("%d credentials still active after the close", n)
		}
	}
	rep := summarize("close", o.concurrency, 0, closes, 0, "")
	rep.Ops = int64(len(closes))
	var total time.Duration
	for _, d := range closes {
		total += d
	}
	rep.Seconds = total.Seconds()
	rep.OpsPerSec = float64(rep.Ops) / rep.Seconds
	rep.ErrandCPUus = cpu.Seconds() * 1e6 / float64(rep.Ops)
	rep.PostgresCPUus = pg.Seconds() * 1e6 / float64(rep.Ops)
	rep.TotalCPUus = rep.ErrandCPUus + rep.PostgresCPUus
	sort.Slice(inactive, func(i, j int) bool { return inactive[i] < inactive[j] })
	rep.InactiveP50ms = float64(inactive[len(inactive)/2].Microseconds()) / 1000
	rep.InactiveMaxms = float64(inactive[len(inactive)-1].Microseconds()) / 1000
	return rep, nil
}

// forEach runs fn for 0..n-1 on conc workers and returns the first error;
// a worker stops at its first error.
func forEach(conc, n int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		first atomic.Value
		next  atomic.Int64
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return err
}
