package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandhq/errand/internal/version"
)

// TestVersionNamesTheCommitItWasBuiltFrom: a binary built from this
// checkout reports the checkout's commit (with -dirty when the tree has
// changes), by `errand version --json` and `errand --version`.
func TestVersionNamesTheCommitItWasBuiltFrom(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "errand")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v version.Info
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := strings.TrimSpace(string(head)); strings.TrimSuffix(v.Commit, "-dirty") != want || v.Date == "" || v.GoVersion == "" {
		t.Fatalf("version %+v, want commit %s", v, want)
	}
	flag, err := exec.Command(bin, "--version").Output()
	if err != nil || strings.TrimSpace(string(flag)) != v.String() {
		t.Fatalf("--version printed %q (%v), want %q", flag, err, v.String())
	}
}
