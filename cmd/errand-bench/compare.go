package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// compare runs the loop scenarios on two servers, one of o.errand and one
// of o.against, each on its own database, taking turns in slices of
// o.slice until each has run o.duration: both meet the same machine. On a
// VM whose speed drifts by a quarter within the hour, runs one after the
// other cannot resolve a 10 % difference; slices a few seconds apart can.
// Each slice drives one server at full concurrency while the other idles,
// so its CPU and PostgreSQL's during the slice are that server's. The
// order within a pair alternates, so a drift favours neither.
func compare(ctx context.Context, o options, a *bench) ([]Report, error) {
	ob := o
	ob.errand = o.against
	if o.againstEngine != "" {
		ob.engine = o.againstEngine
		if o.policies != "" {
			return nil, fmt.Errorf("--against-policy-engine: with the built-in policies only (--policies is of one engine)")
		}
	}
	b, err := start(ctx, ob)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.against, err)
	}
	defer b.stop()
	benches := [2]*bench{a, b}
	var reports []Report
	for _, sc := range strings.Split(o.scenario, ",") {
		op, ok := loopOps[sc]
		if !ok {
			return nil, fmt.Errorf("--against runs mint, introspect, evaluate and mixed, not %q", sc)
		}
		for _, x := range benches {
			x.drive(o.concurrency, o.warmup, x.bind(op))
		}
		type total struct {
			lat        []time.Duration
			errs       int64
			first      string
			elapsed    time.Duration
			errand, pg time.Duration
		}
		var (
			acc    [2]total
			ratios []float64
		)
		for pair := 0; time.Duration(pair)*o.slice < o.duration; pair++ {
			var perOp [2]float64
			for k := range 2 {
				i := k ^ pair&1 // A then B, then B then A
				x := benches[i]
				before := cpuSnapshot(x.cmd.Process.Pid)
				t0 := time.Now()
				lat, errs, first := x.drive(o.concurrency, o.slice, x.bind(op))
				el := time.Since(t0)
				after := cpuSnapshot(x.cmd.Process.Pid)
				t := &acc[i]
				t.lat, t.errs, t.elapsed = append(t.lat, lat...), t.errs+errs, t.elapsed+el
				t.errand += after.errand - before.errand
				t.pg += after.postgres - before.postgres
				if t.first == "" {
					t.first = first
				}
				slice := Report{Scenario: sc}
				slice.perOp(len(lat), el, after.errand-before.errand, after.postgres-before.postgres)
				perOp[i] = slice.TotalCPUus
			}
			if perOp[0] > 0 && perOp[1] > 0 {
				ratios = append(ratios, perOp[1]/perOp[0])
			}
		}
		for i, x := range benches {
			t := acc[i]
			rep := summarize(sc, o.concurrency, t.elapsed, t.lat, t.errs, t.first)
			rep.Binary = x.errandBin
			rep.perOp(len(t.lat), t.elapsed, t.errand, t.pg)
			rep.ErrandPeakRSS = peakRSS(x.cmd.Process.Pid)
			fmt.Fprintf(os.Stdout, "%s (policy_engine %s):\n", x.errandBin, x.engine)
			printReport(os.Stdout, rep)
			reports = append(reports, rep)
		}
		if len(ratios) > 0 {
			sort.Float64s(ratios)
			q := func(p float64) float64 { return ratios[int(p*float64(len(ratios)-1))] }
			fmt.Fprintf(os.Stdout, "%s total µs/op, %s (%s) over %s (%s), per pair of %s slices (%d pairs): median %.3f, quartiles %.3f–%.3f\n",
				sc, o.against, b.engine, o.errand, a.engine, o.slice, len(ratios), q(0.5), q(0.25), q(0.75))
		}
	}
	return reports, nil
}
