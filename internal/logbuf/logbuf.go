// Package logbuf gathers a process's log lines and writes them to their
// destination in batches.
//
// A request log written straight to stderr costs one write system call per
// request, a measurable share of a mint's CPU (docs/benchmarks.md). Lines
// written here wait at most one flush interval, or until the buffer holds
// its limit, and then go out in one write, in the order they were written.
// Close writes what is left. A crash loses at most the last interval's
// lines; the audit log, which is what must not be lost, is in the database.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// Writer is an io.Writer that batches writes to another writer. It is safe
// for concurrent use; each Write's bytes stay together and in order.
type Writer struct {
	out      io.Writer
	interval time.Duration
	limit    int

	mu     sync.Mutex // held while writing to out, so batches keep their order
	buf    []byte
	closed bool
	err    error // the first error out returned

	kick chan struct{} // a line arrived in an empty buffer
	stop chan struct{}
	done chan struct{}
}

// New returns a Writer that writes to out at least every interval and
// whenever limit bytes are waiting.
func New(out io.Writer, interval time.Duration, limit int) *Writer {
	w := &Writer{
		out:      out,
		interval: interval,
		limit:    limit,
		buf:      make([]byte, 0, limit),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go w.run()
	return w
}

// Write queues p. After Close it writes p straight through.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.out.Write(p)
	}
	if len(w.buf)+len(p) > w.limit {
		w.flushLocked()
		if len(p) > w.limit {
			return w.out.Write(p)
		}
	}
	wasEmpty := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	if wasEmpty {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Flush writes what is waiting now.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return w.err
}

// Close writes what is waiting and stops the background flusher. Later
// writes go straight through. It returns the first write error seen.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return w.err
	}
	w.closed = true
	w.flushLocked()
	w.mu.Unlock()
	close(w.stop)
	<-w.done
	return w.err
}

func (w *Writer) flushLocked() {
	if len(w.buf) == 0 {
		return
	}
	if _, err := w.out.Write(w.buf); err != nil && w.err == nil {
		w.err = err
	}
	w.buf = w.buf[:0]
}

// run flushes one interval after a line lands in an empty buffer, so an
// idle process does not wake and a busy one writes once per interval.
func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTimer(w.interval)
	t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
		t.Reset(w.interval)
		select {
		case <-w.stop:
			t.Stop()
			return
		case <-t.C:
		}
		w.mu.Lock()
		w.flushLocked()
		w.mu.Unlock()
	}
}
