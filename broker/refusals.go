package broker

import (
	"context"
	"errors"
	"fmt"
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

// Operations a refusal's audit event names (its detail's op): the use
// case refused, whichever face of Errand (the REST API, the OAuth
// endpoints, the approval pages) the caller used. OpCreate, OpApprove,
// OpMint, OpSecret, OpIDJAG and OpEvaluate (policy.go) are operations
// too.
const (
	OpDeny          = "deny"             // the user denies a task
	OpBackchannel   = "backchannel"      // an agent asks for a task by CIBA
	OpPoll          = "backchannel-poll" // the agent polls for its CIBA token
	OpExchange      = "exchange"         // the agent exchanges for a token (RFC 8693)
	OpClose         = "close"            // the agent or user closes a task
	OpIntrospect    = "introspect"       // a resource server introspects a token
	OpRevoke        = "revoke"           // a token's holder revokes it (RFC 7009)
	OpSuspend       = "suspend"          // an admin suspends an agent (kill switch)
	OpUnsuspend     = "unsuspend"        // an admin lifts a suspension
	OpReadFeed      = "read-feed"        // a resource server reads the revocation feed
	OpReadTask      = "read-task"        // a task's agent or user reads it
	OpListTasks     = "list-tasks"       // an agent or user lists their tasks
	OpReadApproval  = "read-approval"    // a step-up approval is read
	OpListApprovals = "list-approvals"   // an agent or user lists their approvals
	OpApproveStepUp = "approve-step-up"  // the user approves a step-up approval
	OpDenyStepUp    = "deny-step-up"     // the user denies one
	OpReadAudit     = "read-audit"       // an auditor reads the audit events
	OpReadIssuance  = "read-credentials" // an auditor reads the issuance history
	OpReadHistory   = "read-history"     // an auditor reads a task's timeline
)

// logged is a refusal whose one audit event is in the log already: the
// approval.requested event of the step-up approval it asks for, written
// in the transaction that opened the approval. refused records nothing
// more for it and returns the refusal itself.
type logged struct{ err error }

func (l *logged) Error() string { return l.err.Error() }
func (l *logged) Unwrap() error { return l.err }

// refused records the request.refused event of err, the refusal of a use
// case (op) that p asked for, about task taskID (or, when the caller
// could not name it, the task the refusal names), in its own transaction,
// and returns err. Every exported method of the Service that refuses an
// identified caller calls it once, deferred, so that every refusal is
// audited exactly once, whichever face of Errand answers it:
//
//   - nothing is recorded for a success, an internal error (no code), an
//     outage (unavailable), authorization_pending (a polling client's
//     every few seconds, which refuses nothing), a caller with no verified
//     identity (the HTTP edge counts those as summaries), or a refusal
//     already logged (approval.requested);
//   - a refusal whose event cannot be written is not answered as itself:
//     refused returns unavailable instead (the caller retries).
func (s *Service) refused(ctx context.Context, p Principal, taskID, op string, err error) error {
	return s.refusedAbout(ctx, p, StepUp{TaskID: taskID}, op, err)
}

// refusedAbout is refused for a refusal about step-up approval u (whose
// URL names no task): the event names the approval and its task.
func (s *Service) refusedAbout(ctx context.Context, p Principal, u StepUp, op string, err error) error {
	if err == nil {
		return nil
	}
	if l, ok := err.(*logged); ok {
		return l.err
	}
	switch code := CodeOf(err); {
	case p.Kind == "", code == "", code == ErrUnavailable.Code, code == ErrAuthorizationPending.Code:
		return err
	}
	if aerr := s.recordRefusal(ctx, p, u.TaskID, u.ID, op, err); aerr != nil {
		return fmt.Errorf("%w: the refusal (%s) could not be recorded: %v", ErrUnavailable, CodeOf(err), aerr)
	}
	return err
}

// AuditTaskID keeps a task id only if it looks like one, so that
// caller-chosen bytes of any length never reach the audit log (or a
// request log).
func AuditTaskID(id string) string {
	if len(id) == 0 || len(id) > 64 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return ""
		}
	}
	return id
}

// RecordRefusal writes the request.refused event for a refusal: its code,
// its capped detail (RefusalDetail), op, and the policies, approval and
// reasons it names. The Service records its own refusals (see refused);
// the faces of Errand call RecordRefusal for the refusals they make
// themselves (a malformed body, a missing CSRF token), once each, for a
// caller with a verified identity; the refusals of callers with none are
// counted and chained as summaries (RecordRefusalSummaries). taskID is
// kept only if it looks like a task id; when it is empty, the task the
// refusal names (Error.TaskID) is recorded.
func (s *Service) RecordRefusal(ctx context.Context, p Principal, taskID, op string, refusal error) error {
	return s.recordRefusal(ctx, p, taskID, "", op, refusal)
}

func (s *Service) recordRefusal(ctx context.Context, p Principal, taskID, approval, op string, refusal error) error {
	code := CodeOf(refusal)
	if code == "" {
		code = "internal"
	}
	d := map[string]any{"code": code, "detail": RefusalDetail(refusal), "op": op}
	if approval != "" {
		d["approval"] = approval
	}
	taskID = AuditTaskID(taskID)
	var e *Error
	if errors.As(refusal, &e) {
		if e.Policies != nil {
			d["policies"] = e.Policies
		}
		if e.Reasons != nil {
			d["reasons"] = e.Reasons
		}
		if e.ApprovalID != "" {
			d["approval_id"] = e.ApprovalID
		}
		if taskID == "" {
			taskID = e.TaskID
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
