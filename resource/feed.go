package resource

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/errandhq/errand/api"
)

// revocation is one entry of the feed, in the server's own shape.
type revocation = api.Revocation

// feedPage is how many entries a poll asks for.
const feedPage = 1000

// streamRetry is how long the Verifier polls before it tries the stream
// again after Errand refused it (no stream on that server, or its limit).
const streamRetry = 30 * time.Second

// Run follows the revocation feed and refreshes the JWKS until ctx ends:
// it catches up by polling, holds the stream, and polls every
// PollInterval whenever the stream is closed or refused. It returns nil
// when ctx ends.
func (v *Verifier) Run(ctx context.Context) error {
	go v.refreshKeys(ctx)
	var streamAfter time.Time
	for ctx.Err() == nil {
		if err := v.catchUp(ctx); err != nil {
			v.stale()
			if ctx.Err() == nil {
				v.log.Warn("resource: cannot read the revocation feed", "err", err)
			}
			v.sleep(ctx, v.cfg.PollInterval)
			continue
		}
		if v.cfg.Now().Before(streamAfter) {
			v.sleep(ctx, v.cfg.PollInterval)
			continue
		}
		err := v.stream(ctx)
		v.streaming.Store(false)
		v.stale()
		var refused *streamRefused
		if errors.As(err, &refused) {
			streamAfter = v.cfg.Now().Add(streamRetry)
		}
		if err != nil && ctx.Err() == nil {
			v.log.Warn("resource: revocation stream ended", "err", err)
			v.sleep(ctx, v.cfg.PollInterval)
		}
	}
	return nil
}

func (v *Verifier) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (v *Verifier) refreshKeys(ctx context.Context) {
	for {
		if err := v.keys.refresh(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("resource: cannot refresh Errand's signing keys", "err", err)
		}
		t := time.NewTimer(v.cfg.KeysRefresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// freshFor extends the feed's bound to at least until.
func (v *Verifier) freshFor(until time.Time) {
	n := until.UnixNano()
	for {
		old := v.freshUntil.Load()
		if old >= n || v.freshUntil.CompareAndSwap(old, n) {
			break
		}
	}
	v.readyOnce.Do(func() { close(v.ready) })
}

// stale shortens the bound: the feed was current until now at best, and
// is trusted MaxStale longer.
func (v *Verifier) stale() {
	limit := v.cfg.Now().Add(v.cfg.MaxStale).UnixNano()
	for {
		old := v.freshUntil.Load()
		if old <= limit || v.freshUntil.CompareAndSwap(old, limit) {
			return
		}
	}
}

// catchUp polls GET /v1/revocations until the cursor stops moving; the
// feed was then current at the start of the last poll.
func (v *Verifier) catchUp(ctx context.Context) error {
	for {
		start := v.cfg.Now()
		v.mu.RLock()
		since := v.cursor
		v.mu.RUnlock()
		var page api.RevocationPage
		q := url.Values{"since": {strconv.FormatInt(since, 10)}, "limit": {strconv.Itoa(feedPage)}}
		if err := v.getJSON(ctx, "/v1/revocations?"+q.Encode(), &page); err != nil {
			return err
		}
		next, err := strconv.ParseInt(page.NextCursor, 10, 64)
		if err != nil {
			return fmt.Errorf("revocation feed: bad next_cursor %q", page.NextCursor)
		}
		v.apply(page.Revocations, next)
		if next <= since {
			v.prune()
			v.freshFor(start.Add(v.cfg.MaxStale))
			return nil
		}
	}
}

// apply records entries and moves the cursor to next.
func (v *Verifier) apply(revs []revocation, next int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range revs {
		at, err := time.Parse(time.RFC3339Nano, r.RevokedAt)
		if err != nil {
			at = v.cfg.Now()
		}
		if r.JTI != "" {
			v.revoked[r.JTI] = at
		}
		next = max(next, r.Seq)
	}
	v.cursor = max(v.cursor, next)
}

// prune forgets revocations older than Retention: their tokens expired.
func (v *Verifier) prune() {
	cut := v.cfg.Now().Add(-v.cfg.Retention)
	v.mu.Lock()
	defer v.mu.Unlock()
	for jti, at := range v.revoked {
		if at.Before(cut) {
			delete(v.revoked, jti)
		}
	}
}

// streamRefused: Errand answered the stream with an error status.
type streamRefused struct{ status int }

func (e *streamRefused) Error() string { return fmt.Sprintf("revocation stream refused: %d", e.status) }

// stream holds GET /v1/revocations/stream from the cursor until it ends.
// While it is open the feed counts as current until StreamIdle after the
// last byte read; a silent stream is closed at StreamIdle.
func (v *Verifier) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(v.cfg.StreamIdle, cancel)
	defer idle.Stop()
	req, err := v.request(ctx, http.MethodGet, "/v1/revocations/stream", nil)
	if err != nil {
		return err
	}
	v.mu.RLock()
	req.Header.Set("Last-Event-ID", strconv.FormatInt(v.cursor, 10))
	v.mu.RUnlock()
	req.Header.Set("Accept", "text/event-stream")
	res, err := v.streamClient().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return &streamRefused{status: res.StatusCode}
	}
	v.streaming.Store(true)
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 4096), 1<<20)
	var id, data string
	for sc.Scan() {
		idle.Reset(v.cfg.StreamIdle)
		v.freshFor(v.cfg.Now().Add(v.cfg.StreamIdle))
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				var r revocation
				if err := json.Unmarshal([]byte(data), &r); err != nil {
					return fmt.Errorf("revocation stream: %w", err)
				}
				seq, _ := strconv.ParseInt(id, 10, 64)
				v.apply([]revocation{r}, seq)
			}
			id, data = "", ""
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// streamClient is HTTPClient without its overall timeout, which would cut
// the stream.
func (v *Verifier) streamClient() *http.Client {
	c := *v.cfg.HTTPClient
	c.Timeout = 0
	return &c
}

// request builds a request to Errand authenticated with the resource
// server's own identity.
func (v *Verifier) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	tok, err := v.cfg.Credential.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("resource server credential: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.errand+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return req, nil
}

func (v *Verifier) getJSON(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := v.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	res, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return fmt.Errorf("%s: %s %s", path, res.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(io.LimitReader(res.Body, 16<<20)).Decode(out)
}

// introspect asks Errand whether t is active (RFC 7662), for a Verifier
// whose feed is past its bound. Only an active answer for this very token
// and audience accepts it; an outage refuses with 503.
func (v *Verifier) introspect(ctx context.Context, t *Token) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := v.request(ctx, http.MethodPost, "/v1/introspect", strings.NewReader(url.Values{"token": {t.Raw}}.Encode()))
	if err != nil {
		return unavailable("the revocation feed is unavailable and introspection cannot authenticate")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return unavailable("the revocation feed and introspection are unavailable")
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return unavailable("the revocation feed and introspection are unavailable")
	}
	var in api.Introspection
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&in); err != nil {
		return unavailable("introspection answered badly")
	}
	if !in.Active || in.JTI != t.JTI || in.Aud != v.cfg.Audience {
		return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "the token is not active", DPoP: t.JKT != ""}
	}
	t.Introspected = true
	return nil
}
