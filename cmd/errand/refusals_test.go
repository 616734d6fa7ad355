package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestH03ServeChainsAnonymousRefusalSummaries: errand serve (here through
// errand dev, which is wired the same way) runs the summariser: garbage
// tokens are answered 401 and, at the latest at shutdown, chained as one
// summary of their source that an auditor reads, counting each of them.
func TestH03ServeChainsAnonymousRefusalSummaries(t *testing.T) {
	db := filepath.Join(t.TempDir(), "errand-dev.db")
	addr := freeAddr(t)
	d := startDev(t, addr, db)
	for i := 0; i < 3; i++ {
		if _, errLine := d.cli(t, "task", "list", "--token", "garbage"); !strings.HasPrefix(errLine, "errand: 401 invalid_token") {
			t.Fatalf("garbage token: %q", errLine)
		}
	}
	d.stop(t)

	d2 := startDev(t, addr, db)
	auditor := strings.TrimSpace(d2.must(t, "dev", "token", "--kind", "user", "--sub", "carol", "--group", "auditors"))
	out := d2.must(t, "audit", "events", "--token", auditor, "--type", "request.refused")
	wantLines(t, out, "anonymous", "code=invalid_token", "count=3", "source=127.0.0.1")
	if strings.Count(out, "code=invalid_token") != 1 {
		t.Fatalf("three garbage tokens from one source were not one summary:\n%s", out)
	}
}
