// Package scripts holds the tests of the shell scripts beside it.
package scripts_test

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestReleaseBuildsAStaticStampedBinaryWithChecksums runs
// scripts/release.sh for this machine's target: the binary it writes is
// listed in SHA256SUMS with its real digest, is statically linked, and
// `version --json` names the commit of this checkout.
func TestReleaseBuildsAStaticStampedBinaryWithChecksums(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	target := runtime.GOOS + "/" + runtime.GOARCH
	switch target {
	case "linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64":
	default:
		t.Skipf("release.sh does not build for %s", target)
	}
	dist := t.TempDir()
	cmd := exec.Command("bash", "release.sh", target)
	cmd.Env = append(os.Environ(), "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}
	name := "errand_" + runtime.GOOS + "_" + runtime.GOARCH
	bin := filepath.Join(dist, name)

	sums, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	listed := map[string]string{}
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's format", sc.Text())
		}
		listed[file] = sum
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(raw)
	if len(listed) != 1 || listed[name] != hex.EncodeToString(digest[:]) {
		t.Fatalf("SHA256SUMS lists %v, want only %s %x", listed, name, digest)
	}

	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("the binary names a dynamic loader: not static (CGO_ENABLED=0)")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Fatalf("the binary needs shared libraries %v", libs)
		}
	}

	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Commit, Date string }
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := strings.TrimSpace(string(head)); strings.TrimSuffix(v.Commit, "-dirty") != want || v.Date == "" {
		t.Fatalf("version --json = %s, want commit %s (built with -buildvcs=true)", out, want)
	}
}
