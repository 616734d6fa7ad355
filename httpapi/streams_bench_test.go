package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/revocation"
)

// BenchmarkR03IdleStreams measures what 5,000 idle revocation streams
// (1,250 resource servers, 4 each) cost a replica on PostgreSQL, woken as
// serve wires it (LISTEN/NOTIFY and a 1 s poll): reads of the feed from the
// database per second while nothing moves and per move of the head, stream
// wake-ups while nothing moves, the time from a close to its event on every
// stream, and the latency of introspection (which reads the database) with
// and without the streams. The streams are held by a process of their own
// (testdata/streamclients), so that the clients' goroutines do not weigh on
// the server measured; windows with and without them alternate over
// several rounds, so that the machine's other load falls on both alike. It
// runs its protocol once, whatever b.N:
//
//	ERRAND_TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' \
//	  go test ./httpapi -run '^$' -bench R03IdleStreams -benchtime 1x -timeout 20m
func BenchmarkR03IdleStreams(b *testing.B) {
	const (
		servers, each = 1250, 4
		streams       = servers * each
		rounds        = 3
		probe         = 2 * time.Second // one window of introspections
		idle          = 3 * time.Second // per round, streams open, nothing moving
	)
	var reads atomic.Int64
	hub := &revocation.Hub{Poll: time.Second}
	e := newEnvWith(b, envOptions{notifier: hub, feedReads: &reads, streams: StreamLimits{PerReplica: streams}})
	e.bench = true
	hub.Listen = e.st.Listen
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = hub.Run(ctx) }()

	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	at := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), 201).str("access_token")
	rs := e.resource("rs")
	// introspect adds one client's introspection latencies over a window.
	introspect := func(lat []time.Duration) []time.Duration {
		for begin := time.Now(); time.Since(begin) < probe; {
			start := time.Now()
			if r := e.introspect(rs, at); r.JSON["active"] != true {
				b.Fatalf("introspect: %s", r.Raw)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}

	dir := b.TempDir()
	bin := filepath.Join(dir, "streamclients")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/streamclients").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	tokens := make([]string, servers)
	for i := range tokens {
		tokens[i] = e.resource(fmt.Sprintf("gateway-%d", i))
	}
	tokFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokFile, []byte(strings.Join(tokens, "\n")), 0o600); err != nil {
		b.Fatal(err)
	}
	// open starts the clients and waits for their streams; the function it
	// returns waits for k events on them.
	open := func() (expect func(k int), stop func()) {
		cmd := exec.Command(bin, "-url", e.srv.URL, "-since", e.feedTail(), "-tokens", tokFile, "-each", fmt.Sprint(each))
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		answers := bufio.NewScanner(out)
		answer := func(want string) {
			b.Helper()
			if !answers.Scan() || answers.Text() != want {
				b.Fatalf("stream clients said %q, want %q", answers.Text(), want)
			}
		}
		answer(fmt.Sprintf("open %d", streams))
		if n := e.metric("errand_revocation_streams_open"); n != streams {
			b.Fatalf("%v streams open, want %d", n, streams)
		}
		return func(k int) {
				fmt.Fprintf(in, "expect %d\n", k)
				answer(fmt.Sprintf("got %d", k))
			}, func() {
				in.Close()
				_, _ = io.Copy(io.Discard, out)
				_ = cmd.Wait()
				deadline := time.Now().Add(time.Minute)
				for e.metric("errand_revocation_streams_open") != 0 {
					if time.Now().After(deadline) {
						b.Fatal("the streams did not end")
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
	}

	e.introspect(rs, at) // warm up
	var (
		without, with                  []time.Duration
		idleReads, idleWakes, movReads float64
		delivery                       time.Duration
	)
	for range rounds {
		without = introspect(without)
		expect, stop := open()
		settle(b, &reads)

		// Nothing moves: the hub wakes the reader every second.
		r0, w0 := reads.Load(), e.metric("errand_revocation_stream_wakes_total")
		time.Sleep(idle)
		with = introspect(with)
		idleReads += float64(reads.Load() - r0)
		idleWakes += e.metric("errand_revocation_stream_wakes_total") - w0

		// One revocation: one move of the head, to every stream.
		r0 = reads.Load()
		start := time.Now()
		e.closeWithCredentials(1)
		expect(streams)
		delivery = max(delivery, time.Since(start))
		movReads += float64(reads.Load() - r0)
		stop()
	}
	without = introspect(without)

	stats := func(lat []time.Duration) (p50, p99, mean time.Duration) {
		slices.Sort(lat)
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		return lat[len(lat)/2], lat[len(lat)*99/100], sum / time.Duration(len(lat))
	}
	p50a, p99a, meanA := stats(without)
	p50b, p99b, meanB := stats(with)
	quiet := rounds * (idle + probe)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(idleReads/quiet.Seconds(), "feed-reads/s-idle")
	b.ReportMetric(idleWakes, "stream-wakes-idle")
	b.ReportMetric(movReads/rounds, "feed-reads/head-move")
	b.ReportMetric(ms(delivery), "ms-close-to-all-streams")
	b.ReportMetric(ms(p50a), "ms-p50-without")
	b.ReportMetric(ms(p50b), "ms-p50-with")
	b.ReportMetric(float64(p50b)/float64(p50a), "p50-ratio")
	b.ReportMetric(float64(meanB)/float64(meanA), "mean-ratio")
	b.Logf("introspection p50/p99/mean: without streams %v/%v/%v (%d probes), with %d idle streams %v/%v/%v (%d probes)",
		p50a, p99a, meanA, len(without), streams, p50b, p99b, meanB, len(with))
	b.Logf("feed reads: %.0f in %v with nothing moving (%.0f stream wake-ups); %.1f per revocation, delivered to %d streams within %v",
		idleReads, quiet, idleWakes, movReads/rounds, streams, delivery.Round(time.Millisecond))
}
