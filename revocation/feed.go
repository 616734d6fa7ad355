package revocation

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/errandhq/errand/broker"
)

// FeedStore is what the feed reader needs of the database.
type FeedStore interface {
	// Revocations lists the feed after a position, in commit order, each
	// entry with its credential's audience.
	Revocations(ctx context.Context, afterSeq int64, limit int) ([]broker.Revocation, error)
	// AuditHead is the newest audit event's seq. Feed positions are audit
	// seqs, assigned in commit order, so every entry at or below it has
	// committed.
	AuditHead(ctx context.Context) (int64, string, error)
}

// DefaultFeedWindow is how many recent entries a Feed keeps in memory.
const DefaultFeedWindow = 4096

// feedPage is how many entries the reader asks the store for at once.
const feedPage = 1000

// Feed is a replica's one reader of the revocation feed, shared by all of
// its revocation streams (R03). Woken by Wake (the Hub: LISTEN/NOTIFY, or
// its poll), it reads what follows its head from the store, once for every
// stream, keeps the newest Window entries in memory, and, only when the
// head moved, wakes the streams waiting on Moved. Each stream keeps its
// own position and shows its resource server only what it may see
// (broker.Service.VisibleFeed); a stream whose position is older than
// what the reader holds reads the store itself (After's ok is false).
//
// The reader starts when a stream first asks (Moved, After or Floor), so
// that a replica no stream reads from reads nothing, at the audit head of
// that moment: older entries are read from the store by the streams that
// want them.
type Feed struct {
	Store FeedStore
	Wake  interface{ Changed() <-chan struct{} }
	// Window is how many of the newest entries are kept; default
	// DefaultFeedWindow.
	Window int
	Logger *slog.Logger

	reads atomic.Int64
	// lastRead is when the reader last read the store successfully (unix
	// nanoseconds): with the hub's wake-ups at least every second, a
	// healthy reader is never more than a second or two behind it.
	lastRead atomic.Int64

	wantOnce, askOnce sync.Once
	want              chan struct{} // closed when a stream first asks

	mu    sync.RWMutex
	ready bool
	ring  []broker.Revocation // oldest first, at most Window entries
	floor int64               // ring holds every entry after floor, up to head
	head  int64
	moved chan struct{}
}

// Reads is how many reads of the feed from the store the reader has
// finished.
func (f *Feed) Reads() int64 { return f.reads.Load() }

// wanted is closed when a stream first asks.
func (f *Feed) wanted() chan struct{} {
	f.wantOnce.Do(func() { f.want = make(chan struct{}) })
	return f.want
}

// ask starts the reader, if it is not reading yet.
func (f *Feed) ask() { f.askOnce.Do(func() { close(f.wanted()) }) }

// Moved returns a channel closed when the head next moves (or the reader
// starts).
func (f *Feed) Moved() <-chan struct{} {
	f.ask()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.moved == nil {
		f.moved = make(chan struct{})
	}
	return f.moved
}

// After returns copies of at most limit entries after position after, of
// every audience, and the position they take a reader to: the last one's,
// or the head when they are all the reader holds beyond after. ok is false
// when the reader does not hold everything after after (it has not
// started, or after is older than its window): read the store from after.
func (f *Feed) After(after int64, limit int) (revs []broker.Revocation, next int64, ok bool) {
	f.ask()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.ready || after < f.floor {
		return nil, after, false
	}
	i := sort.Search(len(f.ring), func(i int) bool { return f.ring[i].Seq > after })
	j := min(len(f.ring), i+max(limit, 0))
	revs = append([]broker.Revocation(nil), f.ring[i:j]...)
	if j < len(f.ring) {
		return revs, f.ring[j-1].Seq, true
	}
	return revs, max(after, f.head), true
}

// Floor is the position from which the reader holds every entry; ok is
// false before it started. Every entry at or below it has committed, so a
// complete read of the store that began after Floor was asked may move on
// to it.
func (f *Feed) Floor() (int64, bool) {
	f.ask()
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.floor, f.ready
}

// Run reads the feed whenever Wake fires, from the first time a stream
// asks until ctx ends. A failed read is logged and tried again at the next
// wake-up: the streams wait meanwhile.
func (f *Feed) Run(ctx context.Context) error {
	select {
	case <-f.wanted():
	case <-ctx.Done():
		return nil
	}
	for {
		head, _, err := f.Store.AuditHead(ctx)
		if err == nil {
			f.lastRead.Store(time.Now().UnixNano())
			f.mu.Lock()
			f.floor, f.head, f.ready = head, head, true
			f.wakeLocked()
			f.mu.Unlock()
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		f.warn("revocation feed: cannot read the head; streams read the database meanwhile", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	for {
		wake := f.Wake.Changed()
		if err := f.step(ctx); err != nil && ctx.Err() == nil {
			f.warn("revocation feed: cannot read the feed; retrying at the next wake-up", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

// Fresh reports whether the reader has started and read the store
// successfully within the last d. A stream answering from the reader's
// memory is only as current as the reader: a stale one must not tell
// its clients, by its keep-alives, that nothing was revoked.
func (f *Feed) Fresh(d time.Duration) bool {
	f.mu.RLock()
	ready := f.ready
	f.mu.RUnlock()
	return ready && time.Since(time.Unix(0, f.lastRead.Load())) <= d
}

// feedReadTimeout bounds one read of the store, so that a hung connection
// shows as a stale reader rather than a reader that waits for ever.
const feedReadTimeout = 10 * time.Second

// step reads everything after the head, a page at a time, and publishes
// each page.
func (f *Feed) step(ctx context.Context) error {
	f.mu.RLock()
	head := f.head
	f.mu.RUnlock()
	for {
		rctx, cancel := context.WithTimeout(ctx, feedReadTimeout)
		revs, err := f.Store.Revocations(rctx, head, feedPage)
		cancel()
		f.reads.Add(1)
		if err != nil {
			return err
		}
		f.lastRead.Store(time.Now().UnixNano())
		if len(revs) > 0 {
			f.publish(revs)
			head = revs[len(revs)-1].Seq
		}
		if len(revs) < feedPage {
			return nil
		}
	}
}

// publish appends entries read after the head, drops the oldest beyond
// the window, and wakes the streams.
func (f *Feed) publish(revs []broker.Revocation) {
	window := f.Window
	if window <= 0 {
		window = DefaultFeedWindow
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ring = append(f.ring, revs...)
	if n := len(f.ring) - window; n > 0 {
		f.floor = f.ring[n-1].Seq
		f.ring = append(f.ring[:0], f.ring[n:]...)
	}
	f.head = f.ring[len(f.ring)-1].Seq
	f.wakeLocked()
}

func (f *Feed) wakeLocked() {
	if f.moved != nil {
		close(f.moved)
		f.moved = nil
	}
}

func (f *Feed) warn(msg string, err error) {
	if f.Logger != nil {
		f.Logger.Warn(msg, "err", err)
	}
}
