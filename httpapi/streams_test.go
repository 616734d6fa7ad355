package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/revocation"
	"github.com/errandhq/errand/store/postgres"
)

// countingFeed counts the reads of the revocation feed from the store.
type countingFeed struct {
	*postgres.Store
	reads *atomic.Int64
}

func (c countingFeed) Revocations(ctx context.Context, afterSeq int64, limit int) ([]broker.Revocation, error) {
	c.reads.Add(1)
	return c.Store.Revocations(ctx, afterSeq, limit)
}

// runFeed runs a replica's revocation feed reader over src until the test
// ends, woken by wake or, when nil, by a Hub polling every second.
func (e *env) runFeed(src revocation.FeedStore, wake interface{ Changed() <-chan struct{} }, window int) *revocation.Feed {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if wake == nil {
		hub := &revocation.Hub{Poll: time.Second}
		wake = hub
		wg.Add(1)
		go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	}
	f := &revocation.Feed{Store: src, Wake: wake, Window: window}
	wg.Add(1)
	go func() { defer wg.Done(); _ = f.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return f
}

// tryStream opens the revocation stream as the resource server rsSub. On
// 200 it returns the events and a stop function; otherwise the answer,
// checked against openapi.yaml.
func (e *env) tryStream(rsSub, lastEventID string) (resp, <-chan sseEvent, func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/revocations/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e.resource(rsSub))
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		defer cancel()
		defer res.Body.Close()
		out := resp{Status: res.StatusCode, Header: res.Header}
		out.Raw, _ = io.ReadAll(res.Body)
		_ = json.Unmarshal(out.Raw, &out.JSON)
		checkContract(e.t, req, nil, res.StatusCode, res.Header, out.Raw)
		return out, nil, nil
	}
	ch := readEvents(res.Body)
	return resp{Status: res.StatusCode, Header: res.Header}, ch, cancel
}

// metric reads one unlabelled sample from /metrics (0 when absent).
func (e *env) metric(name string) float64 {
	e.t.Helper()
	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				e.t.Fatalf("metric %s: %q", name, v)
			}
			return f
		}
	}
	return 0
}

// settle waits until reads has not moved for 300 ms: the streams just
// opened have read what they had to.
func settle(t testing.TB, reads *atomic.Int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, since := reads.Load(), time.Now()
	for time.Since(since) < 300*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("the feed reads never settled")
		}
		time.Sleep(20 * time.Millisecond)
		if n := reads.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}

// closeWithCredentials approves a task, mints n tokens for apiGitHub and
// closes the task; it returns the tokens' jtis.
func (e *env) closeWithCredentials(n int) []string {
	e.t.Helper()
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	agent := broker.Principal{Issuer: e.agents.URL, Subject: "agent-1", Kind: broker.KindAgent}
	var jtis []string
	for i := 0; i < n; i++ {
		m, err := e.svc.Mint(context.Background(), agent, id, broker.MintRequest{Scopes: []string{"github.repo.read:acme/api"}, Audience: apiGitHub})
		if err != nil {
			e.t.Fatal(err)
		}
		jtis = append(jtis, m.Credential.ID)
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), http.StatusOK)
	return jtis
}

// TestR03StreamCapsPerPrincipalAndPerReplica: a resource server holds at
// most 4 streams on a replica (the default), and the replica at most its
// limit; beyond, 429 rate_limited with Retry-After, audited, and the open
// streams are neither ended nor counted twice. A closed stream frees its
// place.
func TestR03StreamCapsPerPrincipalAndPerReplica(t *testing.T) {
	e := newEnvWith(t, envOptions{streams: StreamLimits{PerReplica: 6}})
	tail := e.feedTail()
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	open := func(rs string) {
		t.Helper()
		r, _, stop := e.tryStream(rs, tail)
		if r.Status != http.StatusOK {
			t.Fatalf("stream %d for %s: %d %s", len(stops)+1, rs, r.Status, r.Raw)
		}
		stops = append(stops, stop)
	}
	refused := func(rs string, want float64) {
		t.Helper()
		before := e.snapshot()
		r, _, stop := e.tryStream(rs, tail)
		if stop != nil {
			stop()
			t.Fatalf("a stream beyond the limit was opened for %s", rs)
		}
		e.refused(before, r, http.StatusTooManyRequests, "rate_limited")
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		if got := e.metric("errand_revocation_streams_open"); got != want {
			t.Fatalf("%v streams open after the refusal, want %v", got, want)
		}
	}
	for i := 0; i < 4; i++ {
		open("gateway-a")
	}
	refused("gateway-a", 4) // per principal
	open("gateway-b")
	open("gateway-b")
	refused("gateway-c", 6) // per replica
	stops[0]()
	deadline := time.Now().Add(5 * time.Second)
	for e.metric("errand_revocation_streams_open") != 5 {
		if time.Now().After(deadline) {
			t.Fatal("a closed stream kept its place")
		}
		time.Sleep(20 * time.Millisecond)
	}
	open("gateway-c")
	refused("gateway-a", 6)
}

// manualWake is a Hub that only wakes when the test says so.
func manualWake() *revocation.Hub { return &revocation.Hub{Poll: time.Hour} }

// TestR03OneFeedReadFansOutToEveryStream: forty streams of ten resource
// servers each receive a revocation, and the store was read for it once,
// not once per stream.
func TestR03OneFeedReadFansOutToEveryStream(t *testing.T) {
	var reads atomic.Int64
	wake := manualWake()
	e := newEnvWith(t, envOptions{notifier: wake, feedReads: &reads})
	tail := e.feedTail()
	const servers, each = 10, 4
	var chans []<-chan sseEvent
	for i := 0; i < servers; i++ {
		for j := 0; j < each; j++ {
			ch, stop := e.openStreamAs(t, fmt.Sprintf("gateway-%d", i), tail)
			defer stop()
			chans = append(chans, ch)
		}
	}
	id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
	jti := e.mustStatus(e.mint("agent-1", id, "github.repo.read:acme/api"), http.StatusCreated).str("jti")
	settle(t, &reads)

	before := reads.Load()
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", e.agent("agent-1"), nil), http.StatusOK)
	wake.Notify()
	for i, ch := range chans {
		if ev := recv(t, ch); ev.data.JTI != jti {
			t.Fatalf("stream %d sent %s, want %s", i, ev.data.JTI, jti)
		}
	}
	if n := reads.Load() - before; n != 1 {
		t.Fatalf("%d reads of the feed for one revocation on %d streams, want 1", n, len(chans))
	}
}

// TestR03StreamsWakeOnlyWhenTheHeadMoves: wake-ups with nothing new cost
// one read of the feed each, whatever the number of streams, and wake no
// stream; a revocation wakes each stream once.
func TestR03StreamsWakeOnlyWhenTheHeadMoves(t *testing.T) {
	var reads atomic.Int64
	wake := manualWake()
	e := newEnvWith(t, envOptions{notifier: wake, feedReads: &reads})
	tail := e.feedTail()
	const n = 20
	var chans []<-chan sseEvent
	for i := 0; i < n; i++ {
		ch, stop := e.openStreamAs(t, fmt.Sprintf("gateway-%d", i), tail)
		defer stop()
		chans = append(chans, ch)
	}
	settle(t, &reads)

	readsBefore, wakesBefore := reads.Load(), e.metric("errand_revocation_stream_wakes_total")
	const ticks = 10
	for i := 0; i < ticks; i++ {
		wake.Notify()
		time.Sleep(50 * time.Millisecond)
	}
	settle(t, &reads)
	if got := reads.Load() - readsBefore; got < 1 || got > ticks {
		t.Fatalf("%d reads of the feed for %d wake-ups with nothing new on %d streams, want 1 to %d", got, ticks, n, ticks)
	}
	if got := e.metric("errand_revocation_stream_wakes_total") - wakesBefore; got != 0 {
		t.Fatalf("%v streams woken while the head stood still", got)
	}
	for i, ch := range chans {
		select {
		case ev := <-ch:
			t.Fatalf("stream %d sent %s with nothing revoked", i, ev.data.JTI)
		default:
		}
	}

	jtis := e.closeWithCredentials(1)
	wake.Notify()
	for i, ch := range chans {
		if ev := recv(t, ch); ev.data.JTI != jtis[0] {
			t.Fatalf("stream %d sent %s, want %s", i, ev.data.JTI, jtis[0])
		}
	}
	if got := e.metric("errand_revocation_stream_wakes_total") - wakesBefore; got != n {
		t.Fatalf("%v wake-ups for one move of the head on %d streams, want %d", got, n, n)
	}
}

// TestR03StreamResumesFromLastEventID: a stream resumed after Last-Event-ID
// sends exactly what it missed, in order: from the reader's memory
// without reading the store when the gap is in its window, and from the
// store, once, when the gap is older than the window.
func TestR03StreamResumesFromLastEventID(t *testing.T) {
	var reads atomic.Int64
	wake := manualWake()
	e := newEnvWith(t, envOptions{notifier: wake, feedReads: &reads, feedWindow: 8})
	tail := e.feedTail()
	ch, stop := e.openStream(t, tail)
	first := e.closeWithCredentials(3)
	wake.Notify()
	seen := map[string]bool{}
	var last int64
	take := func(ch <-chan sseEvent, want []string) {
		t.Helper()
		for range want {
			ev := recv(t, ch)
			id, err := strconv.ParseInt(ev.id, 10, 64)
			if err != nil || id <= last {
				t.Fatalf("event id %q after %d", ev.id, last)
			}
			if seen[ev.data.JTI] || !slicesContains(want, ev.data.JTI) {
				t.Fatalf("stream sent %s, want each of %v once", ev.data.JTI, want)
			}
			seen[ev.data.JTI], last = true, id
		}
		select {
		case ev := <-ch:
			t.Fatalf("stream sent %s beyond what was missed", ev.data.JTI)
		case <-time.After(300 * time.Millisecond):
		}
	}
	take(ch, first)
	stop()

	// Missed while disconnected, still in the reader's window.
	second := e.closeWithCredentials(2)
	wake.Notify()
	settle(t, &reads)
	before := reads.Load()
	ch, stop = e.openStream(t, strconv.FormatInt(last, 10))
	take(ch, second)
	stop()
	if n := reads.Load() - before; n != 0 {
		t.Fatalf("resuming inside the window read the store %d times", n)
	}

	// Missed while disconnected, more than the window holds.
	third := e.closeWithCredentials(20)
	wake.Notify()
	settle(t, &reads)
	before = reads.Load()
	ch, stop = e.openStream(t, strconv.FormatInt(last, 10))
	defer stop()
	take(ch, third)
	if n := reads.Load() - before; n != 1 {
		t.Fatalf("catching up from behind the window read the store %d times, want 1", n)
	}
}
