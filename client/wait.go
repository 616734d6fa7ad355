package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotApproved is returned by WaitForApproval when the task ended
// without approval (denied, expired, closed, revoked).
var ErrNotApproved = errors.New("the task was not approved")

// WaitForApproval polls the task until its user decides, backing off from
// 250 ms to 5 s between reads, and returns it once approved. A task that
// ends otherwise is ErrNotApproved (wrapped, with its status and deny
// reason); ctx bounds the wait.
func (c *Client) WaitForApproval(ctx context.Context, id string) (Task, error) {
	wait := 250 * time.Millisecond
	for {
		t, _, err := c.GetTask(ctx, id)
		if err != nil {
			return t, err
		}
		switch t.Status {
		case "approved":
			return t, nil
		case "pending":
		default:
			if t.DenyReason != "" {
				return t, fmt.Errorf("%w: task %s is %s: %s", ErrNotApproved, id, t.Status, t.DenyReason)
			}
			return t, fmt.Errorf("%w: task %s is %s", ErrNotApproved, id, t.Status)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return t, ctx.Err()
		case <-timer.C:
		}
		wait = min(wait*2, 5*time.Second)
	}
}
