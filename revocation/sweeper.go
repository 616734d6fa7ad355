package revocation

import (
	"context"
	"log/slog"
	"time"

	"github.com/errandhq/errand/broker"
)

// Sweeper records the expiry of tasks whose time is up.
type Sweeper struct {
	Service *broker.Service
	// Interval between sweeps; default 1 s.
	Interval time.Duration
	// Batch is how many tasks one transaction ends; default 100.
	Batch  int
	Logger *slog.Logger
}

// Run sweeps until ctx ends. A failed sweep is logged and retried at the
// next tick: expiry is also enforced at every read, so a late sweep never
// leaves a credential usable.
func (s *Sweeper) Run(ctx context.Context) error {
	interval, batch := s.Interval, s.Batch
	if interval <= 0 {
		interval = time.Second
	}
	if batch <= 0 {
		batch = 100
	}
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for {
			n, err := s.Service.ExpireDue(ctx, batch)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("expiry sweep failed", "err", err)
				}
				break
			}
			if n < batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
