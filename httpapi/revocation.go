package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
)

// Notifier tells the revocation streams that something was revoked
// (revocation.Hub).
type Notifier interface {
	Changed() <-chan struct{}
}

// revoke is RFC 7009 for a token's holder: 200 whether or not the token was
// known, so the answer reveals nothing (§2.2).
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	tok, err := formToken(w, r)
	if err != nil {
		c.fail(err)
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

type revocationJSON struct {
	Seq       int64  `json:"seq"`
	JTI       string `json:"jti"`
	TaskID    string `json:"task_id"`
	RevokedAt string `json:"revoked_at"`
	Reason    string `json:"reason"`
}

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
		c.fail(err)
		return
	}
	since, err := parseSince(q.Get("since"))
	if err != nil {
		c.fail(err)
		return
	}
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		c.fail(err)
		return
	}
	page, err := s.svc.Revocations(r.Context(), p, since, limit)
	if err != nil {
		c.fail(err)
		return
	}
	// next_cursor moves past the entries of other audiences too, so that
	// a caller never reads them again.
	out := struct {
		Revocations []revocationJSON `json:"revocations"`
		NextCursor  string           `json:"next_cursor"`
	}{Revocations: make([]revocationJSON, 0, len(page.Revocations)), NextCursor: strconv.FormatInt(page.Next, 10)}
	for _, v := range page.Revocations {
		out.Revocations = append(out.Revocations, renderRevocation(v))
	}
	writeJSON(w, http.StatusOK, out)
}

// revocationStream pushes the feed as Server-Sent Events as revocations
// commit, resumable with Last-Event-ID (or ?since=).
func (s *Server) revocationStream(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	if p.Kind != broker.KindResource {
		c.fail(broker.Errorf(broker.ErrWrongPrincipalKind, "only resource servers read the revocation feed"))
		return
	}
	q, err := allowQuery(r.URL.Query(), "since")
	if err != nil {
		c.fail(err)
		return
	}
	pos := q.Get("since")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		pos = id
	}
	cursor, err := parseSince(pos)
	if err != nil {
		c.fail(err)
		return
	}
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
	for {
		changed := s.notifier.Changed()
		page, err := s.svc.Revocations(ctx, p, cursor, 500)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "revocation stream ended", "err", err)
			}
			return
		}
		for _, v := range page.Revocations {
			data, _ := json.Marshal(renderRevocation(v))
			if !write("id: %d\nevent: revocation\ndata: %s\n\n", v.Seq, data) {
				return
			}
		}
		cursor = page.Next
		if page.Full {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-changed:
		case <-time.After(15 * time.Second):
			if !write(": keep-alive\n\n") {
				return
			}
		}
	}
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
