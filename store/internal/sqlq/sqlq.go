// Package sqlq builds the WHERE clauses of the list queries shared by the
// SQL stores. Values are only ever $n binds; the SQL text is made of fixed
// fragments of this file, so no input byte reaches it.
package sqlq

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
)

// Where is a conjunction of conditions and their bind values.
type Where struct {
	conds []string
	Args  []any
	// Time converts a time to the dialect's bind value.
	Time func(time.Time) any
}

func (q *Where) add(format string, vals ...any) {
	refs := make([]any, len(vals))
	for i, v := range vals {
		if t, ok := v.(time.Time); ok && q.Time != nil {
			v = q.Time(t)
		}
		q.Args = append(q.Args, v)
		refs[i] = fmt.Sprintf("$%d", len(q.Args))
	}
	q.conds = append(q.conds, fmt.Sprintf(format, refs...))
}

// SQL is the clause, "true" when empty.
func (q *Where) SQL() string {
	if len(q.conds) == 0 {
		return "1=1"
	}
	return strings.Join(q.conds, " AND ")
}

// owned starts a list of rows owned by a user or an agent (tasks and
// step-up approvals both carry user_* and agent_* columns).
func owned(user, agent *broker.Ref, conv func(time.Time) any) (*Where, error) {
	q := &Where{Time: conv}
	switch {
	case user != nil:
		q.add("user_iss = %s AND user_sub = %s", user.Issuer, user.Subject)
	case agent != nil:
		q.add("agent_iss = %s AND agent_sub = %s", agent.Issuer, agent.Subject)
	default:
		return nil, errors.New("sqlq: a list needs an agent or a user")
	}
	return q, nil
}

// Tasks selects an agent's or a user's tasks by effective status (see
// broker.Task.EffectiveStatus) after a keyset position.
func Tasks(f broker.TaskFilter, conv func(time.Time) any) (*Where, error) {
	q, err := owned(f.User, f.Agent, conv)
	if err != nil {
		return nil, err
	}
	switch f.Status {
	case "":
	case broker.StatusPending, broker.StatusApproved:
		q.add("(status = %s AND expires_at > %s)", string(f.Status), f.Now)
	case broker.StatusDenied:
		q.add("(status = 'denied' OR (status = 'pending' AND expires_at <= %s))", f.Now)
	case broker.StatusExpired:
		q.add("(status = 'expired' OR (status = 'approved' AND expires_at <= %s))", f.Now)
	default:
		q.add("status = %s", string(f.Status))
	}
	q.add("seq > %s", f.AfterSeq)
	return q, nil
}

// StepUps selects an agent's or a user's step-up approvals by effective
// status (see broker.StepUp.EffectiveStatus) after a keyset position.
func StepUps(f broker.StepUpFilter, conv func(time.Time) any) (*Where, error) {
	q, err := owned(f.User, f.Agent, conv)
	if err != nil {
		return nil, err
	}
	switch f.Status {
	case "":
	case broker.StepUpPending, broker.StepUpApproved:
		q.add("(status = %s AND expires_at > %s)", string(f.Status), f.Now)
	case broker.StepUpExpired:
		q.add("(status IN ('pending', 'approved') AND expires_at <= %s)", f.Now)
	default:
		q.add("status = %s", string(f.Status))
	}
	q.add("seq > %s", f.AfterSeq)
	return q, nil
}

// Credentials selects the issuance history. Actor matches the agent or
// the user, as "<issuer>#<sub>" or a bare sub.
func Credentials(f broker.HistoryFilter, conv func(time.Time) any) *Where {
	q := &Where{Time: conv}
	if f.TaskID != "" {
		q.add("task_id = %s", f.TaskID)
	}
	if f.Type != "" {
		q.add("kind = %s", f.Type)
	}
	if f.Actor != "" {
		if iss, sub, ok := strings.Cut(f.Actor, "#"); ok {
			q.add("((agent_iss = %[1]s AND agent_sub = %[2]s) OR (user_iss = %[1]s AND user_sub = %[2]s))", iss, sub)
		} else {
			q.add("(agent_sub = %[1]s OR user_sub = %[1]s)", f.Actor)
		}
	}
	for _, party := range []struct{ col, v string }{{"agent", f.Agent}, {"user", f.User}} {
		if party.v == "" {
			continue
		}
		if iss, sub, ok := strings.Cut(party.v, "#"); ok {
			q.add("("+party.col+"_iss = %s AND "+party.col+"_sub = %s)", iss, sub)
		} else {
			q.add(party.col+"_sub = %s", party.v)
		}
	}
	q.window("issued_at", f.Since, f.Until)
	q.add("seq > %s", f.AfterSeq)
	return q
}

// Events selects audit events. codeExpr is the dialect's fixed SQL for the
// code inside an event's JSON detail.
func Events(f broker.HistoryFilter, conv func(time.Time) any, codeExpr string) *Where {
	q := &Where{Time: conv}
	if f.TaskID != "" {
		q.add("task_id = %s", f.TaskID)
	}
	if f.Type != "" {
		q.add("type = %s", f.Type)
	}
	if f.Actor != "" {
		if iss, sub, ok := strings.Cut(f.Actor, "#"); ok {
			q.add("(actor_iss = %s AND actor_sub = %s)", iss, sub)
		} else {
			q.add("actor_sub = %s", f.Actor)
		}
	}
	for _, party := range []struct{ col, kind, v string }{{"agent", "agent", f.Agent}, {"user", "user", f.User}} {
		if party.v == "" {
			continue
		}
		if iss, sub, ok := strings.Cut(party.v, "#"); ok {
			q.add("(task_id IN (SELECT id FROM tasks WHERE "+party.col+"_iss = %[1]s AND "+party.col+"_sub = %[2]s)"+
				" OR (actor_kind = '"+party.kind+"' AND actor_iss = %[1]s AND actor_sub = %[2]s))", iss, sub)
		} else {
			q.add("(task_id IN (SELECT id FROM tasks WHERE "+party.col+"_sub = %[1]s)"+
				" OR (actor_kind = '"+party.kind+"' AND actor_sub = %[1]s))", party.v)
		}
	}
	if f.Code != "" {
		q.add(codeExpr+" = %s", f.Code)
	}
	q.window("time", f.Since, f.Until)
	q.add("seq > %s", f.AfterSeq)
	return q
}

func (q *Where) window(col string, since, until time.Time) {
	if !since.IsZero() {
		q.add(col+" >= %s", since)
	}
	if !until.IsZero() {
		q.add(col+" < %s", until)
	}
}

// Limit is the LIMIT clause fetching one more row than asked, so that the
// caller can tell whether more remain.
func Limit(n int) string { return fmt.Sprintf(" LIMIT %d", n+1) }

// ParseScopes re-parses canonical scopes written by a store.
func ParseScopes(ss []string) (broker.Scopes, error) {
	out := make(broker.Scopes, 0, len(ss))
	for _, s := range ss {
		sc, err := broker.ParseScope(s)
		if err != nil {
			return nil, fmt.Errorf("stored scope %q: %w", s, err)
		}
		out = append(out, sc)
	}
	return out, nil
}
