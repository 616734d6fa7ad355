package resource

import (
	"context"
	"sync"
	"time"
)

// memoryReplay is a dpop.ReplayCache for one replica: each proof's jti is
// remembered until the proof could no longer be accepted anyway.
type memoryReplay struct {
	now func() time.Time

	mu    sync.Mutex
	seen  map[string]time.Time
	sweep time.Time
}

func newMemoryReplay(now func() time.Time) *memoryReplay {
	return &memoryReplay{now: now, seen: map[string]time.Time{}}
}

// maxReplay bounds the cache: past it, a proof is refused rather than
// memory grown (an outage, never an acceptance).
const maxReplay = 1 << 20

func (m *memoryReplay) Remember(_ context.Context, id string, expiresAt time.Time) (bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.sweep) > time.Second {
		for k, exp := range m.seen {
			if now.After(exp) {
				delete(m.seen, k)
			}
		}
		m.sweep = now
	}
	if _, ok := m.seen[id]; ok {
		return false, nil
	}
	if len(m.seen) >= maxReplay {
		return false, errReplayFull
	}
	m.seen[id] = expiresAt
	return true, nil
}

type replayFull struct{}

func (replayFull) Error() string { return "resource: DPoP replay cache full" }

var errReplayFull error = replayFull{}
