package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// hold keeps the server and its fixtures up for o.hold instead of driving
// it, for a load generator cheaper than this one's Go HTTP client (whose
// CPU shares the machine's cores with the server): it writes a wrk script
// that introspects the fixtures' active tokens, prints how to run it, and
// at the end prints the CPU the server and PostgreSQL spent meanwhile.
// With --scenario floor the server held is the floor server.
func (b *bench) hold(o options) error {
	d, name, base, pid := o.hold, "errand", b.base, b.cmd.Process.Pid
	if o.scenario == "floor" {
		f, err := b.floor()
		if err != nil {
			return err
		}
		name, base, pid = "floor server", f.base, f.cmd.Process.Pid
	}
	if len(b.tokens) == 0 {
		return fmt.Errorf("--hold: no active tokens for the wrk script")
	}
	script := filepath.Join(b.dir, "introspect.lua")
	var s strings.Builder
	fmt.Fprintf(&s, "-- wrk script written by errand-bench --hold: introspect active tokens in turn\n")
	fmt.Fprintf(&s, "wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer %s\"\n", b.rs)
	fmt.Fprintf(&s, "wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\ntokens = {\n")
	for _, t := range b.tokens {
		fmt.Fprintf(&s, "  %q,\n", t)
	}
	fmt.Fprintf(&s, "}\nlocal i = 0\nrequest = function()\n  i = i %% #tokens + 1\n")
	fmt.Fprintf(&s, "  return wrk.format(nil, \"/v1/introspect\", nil, \"token=\" .. tokens[i])\nend\n")
	if err := os.WriteFile(script, []byte(s.String()), 0o600); err != nil {
		return err
	}
	fmt.Printf("%s at %s (pid %d), held for %s; for example:\n  wrk -t1 -c32 -d10s --latency -s %s %s\n",
		name, base, pid, d, script, base)
	before := cpuSnapshot(pid)
	time.Sleep(d)
	after := cpuSnapshot(pid)
	fmt.Printf("CPU over the hold: %s %.3f s, postgres %.3f s\n",
		name, (after.errand - before.errand).Seconds(), (after.postgres - before.postgres).Seconds())
	return nil
}
