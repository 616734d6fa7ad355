package revocation

import (
	"context"
	"sync"
	"time"
)

// Hub wakes the revocation streams when something was revoked. Listen,
// when set, delivers database notifications (PostgreSQL LISTEN/NOTIFY,
// from any replica); Poll wakes everyone regularly in any case, so a
// missed notification delays an event by at most one poll.
type Hub struct {
	Listen func(ctx context.Context, notify func()) error
	// Poll is the fallback wake-up interval; default 1 s.
	Poll time.Duration

	mu sync.Mutex
	ch chan struct{}
}

// Changed returns a channel closed at the next wake-up.
func (h *Hub) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch == nil {
		h.ch = make(chan struct{})
	}
	return h.ch
}

// Notify wakes every waiter.
func (h *Hub) Notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch != nil {
		close(h.ch)
		h.ch = nil
	}
}

// Run delivers notifications until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	poll := h.Poll
	if poll <= 0 {
		poll = time.Second
	}
	if h.Listen != nil {
		go func() { _ = h.Listen(ctx, h.Notify) }()
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.Notify()
			return nil
		case <-t.C:
			h.Notify()
		}
	}
}
