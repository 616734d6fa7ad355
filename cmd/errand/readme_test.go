package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/testing/testbrowser"
)

// README's walkthroughs are executable. A fenced block whose info string
// is "console walkthrough" is a transcript: "$ " starts a command (a line
// ending in "\" continues it), the lines after it are what it prints
// (stderr included), and "(exit status N)" is its exit status (0 when
// absent). Each block runs verbatim, in one bash, against a fresh
// `errand dev --db :memory:` built from this tree, started with the
// block's dev-args=a,b (comma-separated) if any. A block whose info string
// holds file=NAME is written to NAME in the walkthroughs' directory first.
// A block with browser=NAME has a person click through the pages, in
// headless Chromium, as README's text around it says (readmeClicks[NAME]),
// while its commands run.

// mdBlock is one fenced block of a Markdown file.
type mdBlock struct {
	info, body string
	line       int
}

var fence = regexp.MustCompile("(?m)^```([^\\n]*)\\n")

// fencedBlocks lists the fenced blocks of md, in order.
func fencedBlocks(md string) []mdBlock {
	var out []mdBlock
	for rest, off := md, 0; ; {
		m := fence.FindStringSubmatchIndex(rest)
		if m == nil {
			return out
		}
		info := rest[m[2]:m[3]]
		body := rest[m[1]:]
		end := strings.Index(body, "\n```")
		if end < 0 {
			return out
		}
		if info != "" {
			out = append(out, mdBlock{info: info, body: body[:end+1], line: 1 + strings.Count(md[:off+m[0]], "\n")})
		}
		next := m[1] + end + len("\n```")
		rest, off = rest[next:], off+next
	}
}

// attr is the value of key=value in an info string.
func attr(info, key string) string {
	for _, f := range strings.Fields(info) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// step is one command of a transcript and what README says it prints.
type step struct {
	cmd  string
	want []string
	exit int
}

var exitLine = regexp.MustCompile(`^\(exit status (\d+)\)$`)

func parseTranscript(body string) []step {
	var steps []step
	lines := strings.Split(strings.TrimRight(body, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if cmd, ok := strings.CutPrefix(l, "$ "); ok {
			for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
				i++
				cmd += "\n" + lines[i]
			}
			steps = append(steps, step{cmd: cmd})
			continue
		}
		if len(steps) == 0 {
			continue
		}
		s := &steps[len(steps)-1]
		if m := exitLine.FindStringSubmatch(l); m != nil {
			s.exit, _ = strconv.Atoi(m[1])
			continue
		}
		s.want = append(s.want, l)
	}
	return steps
}

// shapeRules replace what differs from run to run (ids, tokens, times,
// ages, the port) so that two outputs of the same shape compare equal.
var shapeRules = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)*…?`), "JWT"},
	{regexp.MustCompile(`\b(tsk|apr)_[a-z2-7]+…?`), "${1}_ID"},
	{regexp.MustCompile(`\b[a-z2-7]{26}\b`), "ID"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`), "TIME"},
	{regexp.MustCompile(`\((now|in [^)]*|[^)]* ago)\)`), "(AGE)"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`^\d+ `), "SEQ "}, // an audit event's sequence number
	{regexp.MustCompile(`\s+`), " "},
}

func shape(lines []string) []string {
	var out []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		for _, r := range shapeRules {
			l = r.re.ReplaceAllString(l, r.with)
		}
		out = append(out, l)
	}
	return out
}

// errandBinary builds errand from this tree once per test binary.
func errandBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "errand")
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goCmd = p
	}
	if out, err := exec.Command(goCmd, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startDevBinary runs `errand dev --db :memory:` with extra arguments in
// dir and returns its URL.
func startDevBinary(t *testing.T, bin, dir string, extra []string) string {
	t.Helper()
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin, append([]string{"dev", "--db", ":memory:", "--listen", addr}, extra...)...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("errand dev %v: %v\n%s", extra, err, logs.String())
		default:
		}
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
	}
	t.Fatalf("errand dev %v did not start:\n%s", extra, logs.String())
	return ""
}

// runTranscript runs the steps in one bash in dir, with errand on the
// path and ERRAND_SERVER set, and returns each step's output and status.
func runTranscript(t *testing.T, bin, dir, server string, steps []step) ([][]string, []int) {
	t.Helper()
	const mark = "@@@errand-readme-step@@@"
	var script strings.Builder
	script.WriteString("set -o pipefail\nexec 2>&1\n")
	for _, s := range steps {
		fmt.Fprintf(&script, "%s\nprintf '\\n%s %%d\\n' $?\n", s.cmd, mark)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc")
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(script.String())
	cmd.Env = []string{"PATH=" + filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + dir, "ERRAND_SERVER=" + server, "LC_ALL=C.UTF-8"}
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, raw)
	}
	parts := regexp.MustCompile(`\n?`+mark+` (\d+)\n`).Split(string(raw), -1)
	codes := regexp.MustCompile(mark+` (\d+)`).FindAllStringSubmatch(string(raw), -1)
	if len(codes) != len(steps) {
		t.Fatalf("ran %d of %d steps:\n%s", len(codes), len(steps), raw)
	}
	outs := make([][]string, len(steps))
	exits := make([]int, len(steps))
	for i := range steps {
		if o := strings.Trim(parts[i], "\n"); o != "" {
			outs[i] = strings.Split(o, "\n")
		}
		exits[i], _ = strconv.Atoi(codes[i][1])
	}
	return outs, exits
}

// TestREADMEWalkthroughs runs every README walkthrough verbatim against a
// fresh errand dev and fails when a command's exit status, or its output's
// shape (ids, tokens, times and the port aside), differs from README's.
// ERRAND_README_SHOW=1 logs what each command printed.
func TestREADMEWalkthroughs(t *testing.T) {
	for _, tool := range []string{"bash", "jq"} { // README's walkthroughs use jq
		if _, err := exec.LookPath(tool); err != nil {
			needTool(t, tool)
		}
	}
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	bin := errandBinary(t)
	dir := t.TempDir()
	ran := 0
	for _, b := range fencedBlocks(string(raw)) {
		if name := attr(b.info, "file"); name != "" {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(b.body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if !strings.HasPrefix(b.info, "console walkthrough") {
			continue
		}
		ran++
		t.Run(fmt.Sprintf("README.md:%d", b.line), func(t *testing.T) {
			var extra []string
			if a := attr(b.info, "dev-args"); a != "" {
				extra = strings.Split(a, ",")
			}
			server := startDevBinary(t, bin, dir, extra)
			steps := parseTranscript(b.body)
			// browser=NAME: a person does README's clicks in headless
			// Chromium while the transcript runs (its errand task wait
			// waits for them).
			var clicked chan error
			if name := attr(b.info, "browser"); name != "" {
				clicks, ok := readmeClicks[name]
				if !ok {
					t.Fatalf("README.md:%d: no clicks named %q", b.line, name)
				}
				person := testbrowser.New(t).Person()
				clicked = make(chan error, 1)
				go func() { clicked <- clicks(person, server) }()
				// When the transcript fails first (its errand task wait
				// outlives the clicks), say what the clicks met.
				t.Cleanup(func() {
					select {
					case err := <-clicked:
						if err != nil {
							t.Errorf("README's clicks in the browser: %v", err)
						}
					default:
					}
				})
			}
			outs, exits := runTranscript(t, bin, dir, server, steps)
			if clicked != nil {
				if err := <-clicked; err != nil {
					t.Errorf("README's clicks in the browser: %v", err)
				}
				clicked <- nil // read once: the cleanup finds nothing to say
			}
			for i, s := range steps {
				got, want := shape(outs[i]), shape(s.want)
				if os.Getenv("ERRAND_README_SHOW") != "" {
					t.Logf("$ %s\n%s\n(exit status %d)", s.cmd, strings.Join(outs[i], "\n"), exits[i])
				}
				if exits[i] != s.exit {
					t.Errorf("$ %s\nexit status %d, README says %d; it printed:\n%s", s.cmd, exits[i], s.exit, strings.Join(outs[i], "\n"))
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("$ %s\nprinted (shape):\n%s\nREADME shows (shape):\n%s", s.cmd, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
		})
	}
	if ran < 2 {
		t.Fatalf("README.md has %d walkthrough blocks; the errand dev walkthrough and the step-up one are expected", ran)
	}
}

// TestREADMEConfigReferenceChecks: the configuration reference in README
// (the block marked "yaml config-reference") passes `errand config
// check` as written, with what it names made real: its ${VAR}s set, its
// files under /etc/errand/ created (a CA and a certificate it signed) in a
// directory standing in for /etc/errand, and a policy and the schema beside
// it. And what config check prints of it checks again, to the same text.
func TestREADMEConfigReferenceChecks(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var ref string
	for _, b := range fencedBlocks(string(raw)) {
		if b.info == "yaml config-reference" {
			ref = b.body
		}
	}
	if ref == "" {
		t.Fatal(`README.md has no "yaml config-reference" block`)
	}
	for _, v := range regexp.MustCompile(`\$\{([A-Z_]+)\}`).FindAllStringSubmatch(ref, -1) {
		t.Setenv(v[1], strings.Repeat("s", 40))
	}
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(filepath.Join(etc, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	ca, caKey := selfSigned(t, filepath.Join(etc, "ca.pem"), filepath.Join(etc, "ca.key"), 1, true, nil, nil)
	selfSigned(t, filepath.Join(etc, "tls", "tls.crt"), filepath.Join(etc, "tls", "tls.key"), 2, false, ca, caKey)
	if n := strings.Count(ref, "/etc/errand/"); n != 3 {
		t.Fatalf("README's reference names %d files under /etc/errand/; this test makes tls.crt, tls.key and ca.pem", n)
	}
	ref = strings.ReplaceAll(ref, "/etc/errand/", etc+"/")
	if err := os.MkdirAll(filepath.Join(dir, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile("../../policy/testdata/errand.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"errand.cedarschema": schema,
		"allow.cedar":        []byte("@id(\"allow\")\npermit (principal, action, resource);\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, "policies", name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The webhooks' Standard Webhooks secret.
	if err := os.MkdirAll(filepath.Join(dir, "webhooks"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "webhooks", "ops.secret"), []byte("whsec_"+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "errand.yaml")
	if err := os.WriteFile(path, []byte(ref), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLIErr("config", "check", "--config", path)
	if err != nil {
		t.Fatalf("README's configuration reference does not check: %v\n%s", err, out)
	}
	// What config check prints is a config that checks, to the same text.
	printed := filepath.Join(dir, "printed.yaml")
	if err := os.WriteFile(printed, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := runCLIErr("config", "check", "--config", printed)
	if err != nil {
		t.Fatalf("config check's output of README's reference does not check: %v\n%s", err, again)
	}
	if _, body, _ := strings.Cut(again, "\n"); !strings.HasSuffix(out, body) {
		t.Fatalf("the printed reference changes when checked again:\n%s\n---\n%s", out, again)
	}
	for _, want := range []string{"credentials_per_task: 0", "resources_per_task: 0", "max_token_lifetime: 24h0m0s", "- RS256"} {
		if !strings.Contains(out, want) {
			t.Errorf("the effective config lacks %q:\n%s", want, out)
		}
	}
}

// TestDocsStandAlone: README.md and docs/ link only to what is in the
// repository (relative links resolve to a file, anchors to a heading) and
// never point at an issue number or at documents kept elsewhere.
func TestDocsStandAlone(t *testing.T) {
	files := []string{"../../README.md"}
	docs, _ := filepath.Glob("../../docs/*.md")
	files = append(files, docs...)
	if len(docs) == 0 {
		t.Fatal("no docs/*.md")
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	outside := regexp.MustCompile(`(?i:\bissues? #?\d+|\bissue N\b)|\bDESIGN\.md|SECURITY-TESTS\.md|\(#\d+\)|\.\./\.\./`)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		if m := outside.FindString(text); m != "" {
			t.Errorf("%s points outside the repository: %q", f, m)
		}
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			resolved := f
			if file != "" {
				resolved = filepath.Join(filepath.Dir(f), file)
				if _, err := os.Stat(resolved); err != nil {
					t.Errorf("%s links to %s, which is not in the repository", f, target)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(resolved, ".md") && !hasAnchor(t, resolved, anchor) {
				t.Errorf("%s links to %s: no heading %q in %s", f, target, anchor, resolved)
			}
		}
	}
}

// hasAnchor reports whether the Markdown file has a heading whose GitHub
// anchor is anchor.
func hasAnchor(t *testing.T, file, anchor string) bool {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	for _, l := range strings.Split(string(raw), "\n") {
		h, ok := strings.CutPrefix(strings.TrimLeft(l, "#"), " ")
		if !strings.HasPrefix(l, "#") || !ok {
			continue
		}
		a := strings.ReplaceAll(strings.ToLower(drop.ReplaceAllString(h, "")), " ", "-")
		if a == anchor {
			return true
		}
	}
	return false
}

// TestDesignRefusalsMatchTheContract: docs/design.md's refusal table and
// the problem responses of openapi.yaml name the same (status, code) pairs.
func TestDesignRefusalsMatchTheContract(t *testing.T) {
	raw, err := os.ReadFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Components struct {
			Responses map[string]struct {
				Content map[string]struct {
					Schema struct {
						AllOf []struct {
							Properties map[string]struct {
								Enum []any `yaml:"enum"`
							} `yaml:"properties"`
						} `yaml:"allOf"`
					} `yaml:"schema"`
				} `yaml:"content"`
			} `yaml:"responses"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	contract := map[string]bool{}
	for _, r := range spec.Components.Responses {
		for _, of := range r.Content["application/problem+json"].Schema.AllOf {
			for _, st := range of.Properties["status"].Enum {
				for _, code := range of.Properties["code"].Enum {
					contract[fmt.Sprintf("%v %v", st, code)] = true
				}
			}
		}
	}
	if len(contract) < 20 {
		t.Fatalf("read only %d (status, code) pairs from openapi.yaml", len(contract))
	}
	design, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| (\\d{3}) \\| `([a-z_]+)` \\|").FindAllStringSubmatch(string(design), -1) {
		documented[m[1]+" "+m[2]] = true
	}
	for p := range contract {
		if !documented[p] {
			t.Errorf("openapi.yaml answers %s; docs/design.md's refusal table does not say when", p)
		}
	}
	for p := range documented {
		if !contract[p] {
			t.Errorf("docs/design.md lists %s, which openapi.yaml does not answer", p)
		}
	}
}

// TestREADMECurlWalkthrough runs README's curl walkthrough (the block
// marked "sh curl-walkthrough") against a fresh errand dev, with the dev
// identity provider's tokens in $AGENT, $ALICE (group eng), $RS and
// $AUDITOR and the dev server's URL in place of 127.0.0.1:8080, and checks
// that every literal "key":value of its "# →" lines (values holding "…"
// aside) is in what the commands printed.
func TestREADMECurlWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			needTool(t, tool)
		}
	}
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, b := range fencedBlocks(string(raw)) {
		if b.info == "sh curl-walkthrough" {
			block = b.body
		}
	}
	if block == "" {
		t.Fatal(`README.md has no "sh curl-walkthrough" block`)
	}
	bin := errandBinary(t)
	dir := t.TempDir()
	server := startDevBinary(t, bin, dir, nil)
	token := func(args ...string) string {
		cmd := exec.Command(bin, append([]string{"dev", "token", "--server", server}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("errand dev token %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"AGENT=" + token("--kind", "agent", "--sub", "agent-1"),
		"ALICE=" + token("--kind", "user", "--sub", "alice", "--group", "eng"),
		"RS=" + token("--kind", "resource", "--sub", "api-gateway"),
		"AUDITOR=" + token("--kind", "user", "--sub", "carol", "--group", "auditors")}
	script := "set -eu -o pipefail\n" + strings.ReplaceAll(block, "http://127.0.0.1:8080", server) +
		"\necho\necho \"TASK=$TASK\"\n"
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir, cmd.Env, cmd.Stdin = dir, env, strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the walkthrough failed: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^TASK=tsk_[a-z2-7]+$`).Match(out) {
		t.Fatalf("$TASK was not captured:\n%s", out)
	}
	pair := regexp.MustCompile(`"([a-z_]+)":("[^"…]*"|true|false|-?\d+)[,}\]]`)
	checked := 0
	for _, l := range strings.Split(block, "\n") {
		if !strings.HasPrefix(l, "# → ") {
			continue
		}
		for _, m := range pair.FindAllStringSubmatch(l, -1) {
			if want := `"` + m[1] + `":` + m[2]; !strings.Contains(string(out), want) {
				t.Errorf("README shows %s (%q); the answers hold no %s:\n%s", want, l, want, out)
			}
			checked++
		}
	}
	if checked < 10 {
		t.Fatalf("only %d values checked: the walkthrough's # → lines lost their values", checked)
	}
}

// needTool skips a test whose tool is missing, except under CI=true,
// where README's walkthroughs must run: a missing tool fails.
func needTool(t *testing.T, tool string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (CI=true: README's walkthroughs must run)", tool)
	}
	t.Skipf("%s is not installed", tool)
}

// TestREADMEPolicyEngineConfigs loads the two configurations of README's
// policy section (Cedar, and OPA with its data and budget), each with the
// section's examples in its language as the policy files: both start.
func TestREADMEPolicyEngineConfigs(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "## Policies (Cedar or Rego)")
	if start < 0 {
		t.Fatal("README.md has no section \"Policies (Cedar or Rego)\"")
	}
	section := text[start:]
	section = section[:strings.Index(section[3:], "\n## ")+3]
	blocks := fencedBlocks(section)
	schema, err := os.ReadFile("../../policy/testdata/errand.cedarschema")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	engines := 0
	for _, b := range blocks {
		if b.info != "yaml" || !strings.Contains(b.body, "policy_engine:") {
			continue
		}
		engine := "cedar"
		if strings.Contains(b.body, "policy_engine: opa") {
			engine = "opa"
		}
		engines++
		t.Run(engine, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "policies"), 0o700); err != nil {
				t.Fatal(err)
			}
			ext, n := map[string]string{"cedar": "cedar", "opa": "rego"}[engine], 0
			for _, p := range blocks {
				if p.info == ext {
					n++
					if err := os.WriteFile(filepath.Join(dir, "policies", fmt.Sprintf("readme-%d.%s", n, ext)), []byte(p.body), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			for name, body := range map[string][]byte{"errand.cedarschema": schema, "data.json": []byte(`{"protected": []}`)} {
				if err := os.WriteFile(filepath.Join(dir, "policies", name), body, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := `public_url: https://errand.example.com
database_url: postgres://unused
system_secret: ${ERRAND_SYSTEM_SECRET}
issuers:
  - {url: "https://agents.example", audience: errand, kind: agent}
  - {url: "https://login.example", audience: errand, kind: user, groups_claim: groups}
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
  - {name: payments.refund, class: write, risk: medium}
audiences: ["https://api.github.com"]
` + b.body
			path := filepath.Join(dir, "errand.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(path)
			if err != nil {
				t.Fatalf("README's %s configuration:\n%s\n%v", engine, b.body, err)
			}
			set, err := c.PolicySource().Load()
			if err != nil || set.Engine() != engine || set.Len() < 5 || n < 2 {
				t.Fatalf("%s: %v, %d files", engine, err, n)
			}
		})
	}
	if engines != 2 {
		t.Fatalf("README's policy section shows %d configurations naming policy_engine, want one per engine", engines)
	}
}

// readmeClicks are what README's browser walkthroughs tell a person to do
// in the approval pages, done in headless Chromium against the dev server
// at base. Each returns once done, or with what went wrong.
var readmeClicks = map[string]func(ctx context.Context, base string) error{
	// alice signs in with the dev provider's picker, opens the task that
	// waits for her, leaves github.pr.write:acme/api out, narrows
	// github.repo.read:acme/** to acme/api, and approves.
	"approve-narrowed": func(ctx context.Context, base string) error {
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		alice := chromedp.CSS(`button[name="pick"][value="alice"]`)
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(alice), chromedp.Click(alice),
			chromedp.WaitVisible(chromedp.CSS("h1"))); err != nil {
			return fmt.Errorf("sign in: %w", err)
		}
		// The queue shows the task once the agent has asked for it.
		for {
			n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("a.task-link").length`))
			if err != nil {
				return fmt.Errorf("the queue: %w", err)
			}
			if n > 0 {
				break
			}
			time.Sleep(200 * time.Millisecond)
			if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("h1"))); err != nil {
				return fmt.Errorf("reload the queue: %w", err)
			}
		}
		return chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS("a.task-link")),
			chromedp.WaitVisible(chromedp.ID("approve-selected")),
			chromedp.Click(chromedp.CSS(`input[name="scope"][value="github.pr.write:acme/api"]`)),
			chromedp.SetValue(chromedp.CSS(`input[name="resource:github.repo.read:acme/**"]`), "acme/api"),
			chromedp.Click(chromedp.ID("approve-selected")),
			chromedp.WaitVisible(chromedp.ID("approved-scopes")),
		)
	},
}
