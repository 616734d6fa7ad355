package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records each Write it receives.
type sink struct {
	mu     sync.Mutex
	writes [][]byte
	err    error
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, bytes.Clone(p))
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

func (s *sink) snapshot() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes), string(bytes.Join(s.writes, nil))
}

func TestLinesArriveWholeInOrderAndBatched(t *testing.T) {
	var out sink
	w := New(&out, time.Hour, 1<<20)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(w, "g%d line %04d %s\n", g, i, strings.Repeat("x", 40))
			}
		}()
	}
	wg.Wait()
	if n, _ := out.snapshot(); n != 0 {
		t.Fatalf("%d writes reached the destination before the interval or a flush", n)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n, got := out.snapshot()
	if n != 1 {
		t.Fatalf("Close wrote %d times, want one batch", n)
	}
	next := make([]int, writers)
	all := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(all) != writers*lines {
		t.Fatalf("got %d lines, want %d", len(all), writers*lines)
	}
	for _, l := range all {
		var g, i int
		var pad string
		if _, err := fmt.Sscanf(l, "g%d line %d %s", &g, &i, &pad); err != nil || len(pad) != 40 {
			t.Fatalf("torn line %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d came where %d was due", g, i, next[g])
		}
		next[g]++
	}
}

func TestIntervalFlushesWithoutClose(t *testing.T) {
	var out sink
	w := New(&out, 5*time.Millisecond, 1<<20)
	defer w.Close()
	fmt.Fprintln(w, "one")
	fmt.Fprintln(w, "two")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, got := out.snapshot(); got == "one\ntwo\n" {
			break
		}
		if time.Now().After(deadline) {
			_, got := out.snapshot()
			t.Fatalf("after 5 s the destination holds %q", got)
		}
		time.Sleep(time.Millisecond)
	}
	// An idle writer does not write again.
	time.Sleep(20 * time.Millisecond)
	if n, _ := out.snapshot(); n != 1 {
		t.Fatalf("%d writes for one batch", n)
	}
}

func TestLimitWritesEarly(t *testing.T) {
	var out sink
	w := New(&out, time.Hour, 16)
	defer w.Close()
	w.Write([]byte("0123456789\n"))
	w.Write([]byte("abcdefghij\n")) // would pass 16: the first goes out
	if _, got := out.snapshot(); got != "0123456789\n" {
		t.Fatalf("destination holds %q, want the first line", got)
	}
	w.Write([]byte(strings.Repeat("z", 40))) // larger than the limit: straight through, after what waited
	if _, got := out.snapshot(); got != "0123456789\nabcdefghij\n"+strings.Repeat("z", 40) {
		t.Fatalf("destination holds %q", got)
	}
}

func TestAfterCloseWritesGoThrough(t *testing.T) {
	var out sink
	w := New(&out, time.Hour, 1<<20)
	fmt.Fprint(w, "before ")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "after")
	if _, got := out.snapshot(); got != "before after" {
		t.Fatalf("destination holds %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestWriteErrorIsReported(t *testing.T) {
	out := sink{err: errors.New("disk full")}
	w := New(&out, time.Hour, 1<<20)
	fmt.Fprint(w, "lost")
	if err := w.Flush(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Flush = %v, want the destination's error", err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close forgot the write error")
	}
}

func BenchmarkWrite(b *testing.B) {
	w := New(discard{}, 10*time.Millisecond, 256<<10)
	defer w.Close()
	line := []byte(`{"time":"2026-11-30T07:30:00Z","level":"INFO","msg":"request","route":"/v1/tasks/{id}/token"}` + "\n")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(line)
		}
	})
}

// discard keeps nothing, so the benchmark measures the batching and not
// the destination.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
