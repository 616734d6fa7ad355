package testskip

import (
	"bytes"
	"testing"
)

// TestSummaryCountsSkipsByNeed: each skipped test is counted under what it
// needed, with the first reason given, one line per need.
func TestSummaryCountsSkipsByNeed(t *testing.T) {
	mu.Lock()
	saved := skips
	skips = map[string]*need{}
	mu.Unlock()
	defer func() { mu.Lock(); skips = saved; mu.Unlock() }()

	for _, what := range []string{"PostgreSQL", "PostgreSQL", "Vault"} {
		t.Run(what, func(t *testing.T) { Skip(t, what, "not here") })
	}
	var out bytes.Buffer
	summary(&out, "example.com/pkg")
	want := "SKIP  \texample.com/pkg\t2 tests skipped for want of PostgreSQL: not here\n" +
		"SKIP  \texample.com/pkg\t1 test skipped for want of Vault: not here\n"
	if out.String() != want {
		t.Fatalf("summary:\n%q\nwant\n%q", out.String(), want)
	}
}
