// Package testskip counts the tests skipped for want of PostgreSQL or a
// Vault binary, and says so in one line per package when the package's
// tests end, even without -v.
//
// `go test ./...` discards everything a passing package prints, TestMain's
// output included, unless -v is given: a package whose PostgreSQL tests all
// skipped looks exactly like one whose tests ran. So Report writes its line
// to the go command's own output (its standard output, when that is a
// terminal or a pipe, on Linux), where it is seen beside the package's
// "ok" line. A go command writing to a regular file is left alone (a second
// writer would overwrite its lines), as is every other system: there, and
// under -v or -json, the line goes to the test binary's standard output
// (shown with -v, by test2json, and on failure).
package testskip

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"
)

var (
	mu       sync.Mutex
	skips    = map[string]*need{}
	reported bool
)

type need struct {
	reason string
	tests  int
}

// Skip records that t needs what (PostgreSQL, Vault) and cannot have it
// for reason, then skips t with both.
func Skip(t testing.TB, what, reason string) {
	t.Helper()
	mu.Lock()
	n := skips[what]
	if n == nil {
		n = &need{reason: reason}
		skips[what] = n
	}
	n.tests++
	mu.Unlock()
	t.Skip(what + ": " + reason)
}

// Report writes the package's summary once, if any test was skipped; call
// it from TestMain after m.Run.
func Report() {
	mu.Lock()
	done := reported
	reported = true
	mu.Unlock()
	if done {
		return
	}
	w, closeW := destination()
	defer closeW()
	summary(w, pkg())
}

// summary writes one line per missing need.
func summary(w io.Writer, pkg string) {
	mu.Lock()
	defer mu.Unlock()
	whats := make([]string, 0, len(skips))
	for what := range skips {
		whats = append(whats, what)
	}
	sort.Strings(whats)
	for _, what := range whats {
		n := skips[what]
		tests := "tests"
		if n.tests == 1 {
			tests = "test"
		}
		fmt.Fprintf(w, "SKIP  \t%s\t%d %s skipped for want of %s: %s\n", pkg, n.tests, tests, what, n.reason)
	}
}

// pkg is the import path of the package under test.
func pkg() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Path != "" {
		return strings.TrimSuffix(bi.Path, ".test")
	}
	return strings.TrimSuffix(os.Args[0], ".test")
}

// destination is the go command's standard output when the line would
// otherwise be discarded and writing there is safe, else ours.
func destination() (io.Writer, func()) {
	if f := flag.Lookup("test.v"); f != nil && f.Value.String() != "false" {
		return os.Stdout, func() {}
	}
	if runtime.GOOS != "linux" {
		return os.Stdout, func() {}
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/1", os.Getppid()), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return os.Stdout, func() {}
	}
	if st, err := f.Stat(); err != nil || st.Mode().IsRegular() {
		f.Close()
		return os.Stdout, func() {}
	}
	return f, func() { f.Close() }
}
