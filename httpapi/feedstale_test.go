package httpapi

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/revocation"
)

// breakableFeed is the feed store of a replica that can lose the
// database while its streams stay open.
type breakableFeed struct {
	revocation.FeedStore
	broken *atomic.Bool
}

func (b breakableFeed) Revocations(ctx context.Context, after int64, limit int) ([]broker.Revocation, error) {
	if b.broken.Load() {
		return nil, errors.New("this replica cannot read the database")
	}
	return b.FeedStore.Revocations(ctx, after, limit)
}

// TestS02StreamEndsWhenItsFeedReaderStalls: replica B's one feed reader
// stops reading the database while a resource server's stream is open on
// B. The stream must not go on sending keep-alives, which a client takes
// for "nothing was revoked" while revocations committed through replica A
// never reach it: it ends within a few seconds, so the client polls, and
// polling reads the database (or fails closed). Found by review: the
// stream kept the resource server "current" for its whole ten minutes.
func TestS02StreamEndsWhenItsFeedReaderStalls(t *testing.T) {
	e := newEnv(t)
	var broken atomic.Bool
	feedB := e.runFeed(breakableFeed{FeedStore: e.st, broken: &broken}, nil, 0)
	apiB, err := New(Config{Service: e.svc, Auth: e.verifier, PublicURL: publicURL, JWKS: e.tokens.JWKS,
		UserIssuers: []string{e.users.URL}, CursorKey: []byte("cursor-key-for-tests-0123456789"),
		Logger: logger(nil), RateLimits: RateLimits{PerPrincipal: 1e9, PerAddress: 1e9}, Feed: feedB})
	if err != nil {
		t.Fatal(err)
	}
	srvB := httptest.NewServer(apiB)
	t.Cleanup(srvB.Close)
	t.Cleanup(apiB.StopStreams)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srvB.URL+"/v1/revocations/stream", nil)
	req.Header.Set("Authorization", "Bearer "+e.resource("rs"))
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", err, res)
	}
	defer res.Body.Close()
	ended := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
		}
		close(ended)
	}()
	// While the reader reads, the stream stays open.
	deadline := time.Now().Add(10 * time.Second)
	for !feedB.Fresh(time.Second) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-ended:
		t.Fatal("the stream ended while its feed reader was healthy")
	case <-time.After(streamStaleAfter + 2*streamFreshCheck):
	}
	broken.Store(true)
	e.closeWithCredentials(2) // through replica A: revoked, which B's reader cannot see
	start := time.Now()
	select {
	case <-ended:
		if d := time.Since(start); d > streamStaleAfter+3*streamFreshCheck {
			t.Fatalf("the stream ended %v after its reader stalled, want within %v", d, streamStaleAfter+3*streamFreshCheck)
		}
	case <-time.After(streamStaleAfter + 10*streamFreshCheck):
		t.Fatal("the stream stayed open, sending keep-alives, while its feed reader could not read the database")
	}
}
