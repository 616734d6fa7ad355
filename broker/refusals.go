package broker

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"
)

// MaxRefusalDetail caps the detail of a refusal, in its problem answer and
// in its audit event: a refusal may quote what the caller sent (a scope,
// an audience), and no caller may make the append-only log grow by more
// than this per refusal (H03).
const MaxRefusalDetail = 1024

// RefusalDetail is the human-readable detail of a refusal, cut to
// MaxRefusalDetail bytes on a character boundary.
func RefusalDetail(refusal error) string {
	msg := refusal.Error()
	var e *Error
	if errors.As(refusal, &e) && e.Detail != "" {
		msg = e.Detail
	}
	return capText(msg, MaxRefusalDetail)
}

// capText cuts s to at most max bytes, ending on a whole character and
// saying that it was cut.
func capText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = " …(truncated)"
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// AnonymousSource names the summary of the sources beyond those a period
// names one by one.
const AnonymousSource = "other"

// RefusalSummary counts the refusals, with one code, of callers who
// proved no identity (a missing, malformed, forged or foreign token), from
// one source over one period. Such refusals are not chained one by one:
// anyone can send them at line rate, and each would be a permanent row of
// the audit log (H03). They are counted, and a summary per source is
// chained once per period.
type RefusalSummary struct {
	// Source is the caller's network address (an IPv4 address or an IPv6
	// /64), or AnonymousSource for every source beyond those named.
	Source string
	// Sources is how many distinct sources the summary counts (1 for a
	// named source); SourcesUncounted is set when more arrived than could
	// be told apart.
	Sources          int
	SourcesUncounted bool
	Code             string
	Count            int64
	// First and Last are the times of the first and the last refusal.
	First, Last time.Time
}

// RecordRefusalSummaries chains one request.refused event per summary, in
// one transaction. The detail holds counts, times, a code and a network
// address: nothing the callers wrote.
func (s *Service) RecordRefusalSummaries(ctx context.Context, sums []RefusalSummary) error {
	if len(sums) == 0 {
		return nil
	}
	return s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		evs := make([]AuditEvent, 0, len(sums))
		for _, sum := range sums {
			d := map[string]any{
				"code": sum.Code, "count": sum.Count, "source": sum.Source, "sources": sum.Sources,
				"first": sum.First.UTC(), "last": sum.Last.UTC(), "summary": true, "op": "anonymous",
				"detail": "refusals of callers with no verified identity, counted per source and chained once per period",
			}
			if sum.SourcesUncounted {
				d["sources_uncounted"] = true
			}
			evs = append(evs, AuditEvent{Time: now, Type: EventRequestRefused, Actor: ActorOf(Principal{}), Detail: detail(d)})
		}
		return tx.AppendAudit(ctx, evs...)
	})
}

// RecordRefusal writes the request.refused event for a refusal. It is
// called once for every refused request of a caller with a verified
// identity, whatever refused it; the refusals of callers with none are
// counted and chained as summaries (RecordRefusalSummaries). The detail
// is capped (RefusalDetail).
func (s *Service) RecordRefusal(ctx context.Context, p Principal, taskID, op string, refusal error) error {
	code := CodeOf(refusal)
	if code == "" {
		code = "internal"
	}
	var e *Error
	errors.As(refusal, &e)
	d := map[string]any{"code": code, "detail": RefusalDetail(refusal), "op": op}
	if e != nil {
		for k, v := range e.Extra {
			if k == "task" {
				if id, ok := v.(string); ok && taskID == "" {
					taskID = id
				}
				continue
			}
			d[k] = v
		}
	}
	return s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{
			Time: now, Type: EventRequestRefused, Actor: ActorOf(p), TaskID: taskID,
			Detail: detail(d),
		})
	})
}
