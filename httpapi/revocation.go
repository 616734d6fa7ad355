package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/broker"
)

// revoke is RFC 7009 for a token's holder: 200 whether or not the token was
// known, so the answer reveals nothing (§2.2).
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	c := s.beginClient(w, r)
	if c == nil {
		return
	}
	p := c.p
	tok, err := formToken(w, r)
	if err != nil {
		c.refuse(err)
		return
	}
	if err := s.svc.RevokeToken(r.Context(), p, tok); err != nil {
		c.fail(err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// formToken reads the token= of an RFC 7662 or RFC 7009 form body.
func formToken(w http.ResponseWriter, r *http.Request) (string, error) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return "", &statusError{status: http.StatusUnsupportedMediaType,
			err: broker.Errorf(broker.ErrInvalidRequest, "Content-Type must be application/x-www-form-urlencoded")}
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		if strings.Contains(err.Error(), "too large") {
			return "", broker.Errorf(broker.ErrBodyTooLarge, "body larger than %d bytes", MaxBodyBytes)
		}
		return "", broker.Errorf(broker.ErrInvalidRequest, "malformed form body")
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		return "", broker.Errorf(broker.ErrInvalidRequest, "token is required")
	}
	return tok, nil
}

type revocationJSON = api.Revocation

func renderRevocation(v broker.Revocation) revocationJSON {
	return revocationJSON{Seq: v.Seq, JTI: v.JTI, TaskID: v.TaskID, RevokedAt: v.RevokedAt.Format(time.RFC3339Nano), Reason: v.Reason}
}

// parseSince reads a feed position: a non-negative integer.
func parseSince(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, broker.Errorf(broker.ErrInvalidRequest, "since must be a position the feed returned")
	}
	return n, nil
}

// revocations is the polling feed: GET /v1/revocations?since=<cursor>.
func (s *Server) revocations(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	q, err := allowQuery(r.URL.Query(), "since", "limit")
	if err != nil {
		c.refuse(err)
		return
	}
	since, err := parseSince(q.Get("since"))
	if err != nil {
		c.refuse(err)
		return
	}
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		c.refuse(err)
		return
	}
	page, err := s.svc.Revocations(r.Context(), p, since, limit)
	if err != nil {
		c.fail(err)
		return
	}
	// next_cursor moves past the entries of other audiences too, so that
	// a caller never reads them again.
	out := api.RevocationPage{Revocations: make([]revocationJSON, 0, len(page.Revocations)), NextCursor: strconv.FormatInt(page.Next, 10)}
	for _, v := range page.Revocations {
		out.Revocations = append(out.Revocations, renderRevocation(v))
	}
	writeJSON(w, http.StatusOK, out)
}

// revocationStream pushes the feed as Server-Sent Events as revocations
// commit, resumable with Last-Event-ID (or ?since=). Every stream of the
// replica shares its one feed reader (R03): a stream sleeps until the
// feed's head moves, then takes what follows its position from the
// reader's memory and shows its resource server what that one may see
// (VisibleFeed). A stream behind the reader's memory reads the database a
// page at a time, a few streams at once. A resource server holds at most
// StreamLimits.PerPrincipal streams on a replica, and the replica
// StreamLimits.PerReplica; beyond, 429 rate_limited.
func (s *Server) revocationStream(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	if p.Kind != broker.KindResource {
		c.refuse(broker.Errorf(broker.ErrWrongPrincipalKind, "only resource servers read the revocation feed"))
		return
	}
	q, err := allowQuery(r.URL.Query(), "since")
	if err != nil {
		c.refuse(err)
		return
	}
	pos := q.Get("since")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		pos = id
	}
	cursor, err := parseSince(pos)
	if err != nil {
		c.refuse(err)
		return
	}
	if s.feed == nil {
		c.refuse(broker.Errorf(broker.ErrNotFound, "this server streams no revocations; poll /v1/revocations"))
		return
	}
	key := principalKey(p)
	if err := s.streams.take(key); err != nil {
		c.refuse(err)
		return
	}
	defer s.streams.give(key)
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would otherwise end the stream; a stream
	// lasts at most maxStream, then the client resumes (and shows a fresh
	// identity token).
	_ = rc.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(r.Context(), maxStream)
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(": errand revocation feed from %d\n\n", cursor) {
		return
	}
	send := func(v broker.Revocation) bool {
		data, _ := json.Marshal(renderRevocation(v))
		s.streams.delivered.Inc()
		return write("id: %d\nevent: revocation\ndata: %s\n\n", v.Seq, data)
	}
	keepAlive := time.NewTimer(streamKeepAlive)
	defer keepAlive.Stop()
	// A stream answers from the replica's feed reader; if that reader
	// stops reading the store, the stream ends rather than keep sending
	// keep-alives that a client would take for "nothing was revoked". The
	// client then polls, which reads the store (and fails closed when it
	// cannot).
	fresh := time.NewTicker(streamFreshCheck)
	defer fresh.Stop()
	for {
		moved := s.feed.Moved()
		next, more, err := s.streamStep(ctx, p, cursor, send)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errStreamGone) && !errors.Is(err, context.Canceled) {
				s.log.WarnContext(ctx, "revocation stream ended", "err", err)
			}
			return
		}
		cursor = next
		if more {
			continue
		}
		keepAlive.Reset(streamKeepAlive)
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-moved:
			s.streams.wakes.Inc()
		case <-keepAlive.C:
			if !write(": keep-alive\n\n") {
				return
			}
		case <-fresh.C:
			if _, started := s.feed.Floor(); started && !s.feed.Fresh(streamStaleAfter) {
				s.log.WarnContext(ctx, "revocation stream ended: the replica's feed reader has not read the database lately")
				return
			}
		}
	}
}

// errStreamGone: the stream's client went away.
var errStreamGone = errors.New("the stream's client went away")

// streamPage is how many entries a stream takes at once.
const streamPage = 500

// streamKeepAlive is how long a stream waits without events before it
// sends a comment.
const streamKeepAlive = 15 * time.Second

// streamStaleAfter is how long the replica's feed reader may go without
// reading the store (it reads at least every second when healthy) before
// its streams end; streamFreshCheck is how often a stream looks.
const (
	streamStaleAfter = 5 * time.Second
	streamFreshCheck = time.Second
)

// streamStep sends p what follows cursor: from the feed reader's memory,
// or, when cursor is older than what it holds, one page read from the
// database. It returns the stream's new position and whether more is
// ready at once.
func (s *Server) streamStep(ctx context.Context, p broker.Principal, cursor int64, send func(broker.Revocation) bool) (int64, bool, error) {
	if revs, next, ok := s.feed.After(cursor, streamPage); ok {
		page := s.svc.VisibleFeed(p, cursor, revs, len(revs) == streamPage)
		for _, v := range page.Revocations {
			if !send(v) {
				return cursor, false, errStreamGone
			}
		}
		return next, page.Full, nil
	}
	// Everything at or below floor has committed, so once the database
	// has nothing more after cursor, the stream may move on to floor.
	floor, ready := s.feed.Floor()
	var page broker.FeedPage
	err := s.streams.readStore(ctx, s.closing, func() (err error) {
		page, err = s.svc.Revocations(ctx, p, cursor, streamPage)
		return err
	})
	if err != nil {
		return cursor, false, err
	}
	for _, v := range page.Revocations {
		if !send(v) {
			return cursor, false, errStreamGone
		}
	}
	if page.Full {
		return page.Next, true, nil
	}
	if ready {
		return max(page.Next, floor), true, nil
	}
	// The reader has not started: its start moves the head.
	return page.Next, false, nil
}

// maxStream bounds one revocation stream's life.
const maxStream = 10 * time.Minute

type agentBody struct {
	Agent  string `json:"agent"`
	Reason string `json:"reason"`
}

// suspendAgent is the kill switch (admins).
func (s *Server) suspendAgent(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	var b agentBody
	if !c.body(&b, false) {
		return
	}
	tasks, creds, err := s.svc.SuspendAgent(r.Context(), p, b.Agent, b.Reason)
	if err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent": b.Agent, "suspended": true, "tasks_ended": tasks, "revoked": creds})
}

func (s *Server) unsuspendAgent(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	var b struct {
		Agent string `json:"agent"`
	}
	if !c.body(&b, false) {
		return
	}
	if err := s.svc.UnsuspendAgent(r.Context(), p, b.Agent); err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent": b.Agent, "suspended": false})
}
