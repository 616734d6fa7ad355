package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
)

// historyLimit is how many events or credentials one history page shows.
const historyLimit = 100

// historyForm is the history page's filters, as the form sends them.
type historyForm struct {
	View, TaskID, Agent, User, Type, Code, Since, Until string
}

type historyPage struct {
	chrome
	Form        historyForm
	Types       []string
	Events      []eventRow
	Credentials []credentialRow
	Timeline    *timeline
	Chart       chart
	Next        string
	// From is the start of the lists when the filters named none.
	From time.Time
}

type eventRow struct {
	Seq          int64
	Time         time.Time
	Type, Actor  string
	TaskID, Code string
	Detail       string
	Refused      bool
}

type credentialRow struct {
	JTI, Kind, TaskID, Agent, User string
	Scopes                         []string
	Audience                       string
	Issued, Expires, Revoked       time.Time
}

// timeline is one task's story, for an auditor.
type timeline struct {
	ID, Status, Agent, User, Goal string
	Events                        []eventRow
	Credentials                   []credentialRow
	Truncated                     bool
}

// history is the auditors' page: the audit trail, the refusals or the
// issuance history, filtered as GET /v1/audit/events and /v1/credentials
// filter them; a task's whole timeline; and the chart of issuance and
// refusals over the window. Only auditors may read it (the broker
// refuses everyone else, wrong_principal_kind, as the API does).
func (p *Pages) history(w http.ResponseWriter, r *http.Request) {
	v := p.viewerOf(r)
	q := r.URL.Query()
	form := historyForm{View: q.Get("view"), TaskID: q.Get("task_id"), Agent: q.Get("agent"), User: q.Get("user"),
		Type: q.Get("type"), Code: q.Get("code"), Since: q.Get("since"), Until: q.Get("until")}
	f, after, err := historyFilter(q, form)
	if err != nil {
		p.refuse(w, r, "", err)
		return
	}
	page := historyPage{chrome: p.chrome(v), Form: form, Types: broker.EventTypes}
	// Without a window or a task, the lists start a day ago, as the chart
	// does: the first page is the recent past, not the log's beginning.
	if f.Since.IsZero() && f.TaskID == "" {
		f.Since = p.now().UTC().Add(-24 * time.Hour)
		page.From = f.Since
	}
	switch form.View {
	case "", "events", "refusals":
		if form.View == "refusals" {
			f.Type = broker.EventRequestRefused
		}
		f.AfterSeq = after
		evs, more, err := p.svc.AuditEvents(r.Context(), v.Principal, f)
		if err != nil {
			p.fail(w, r, "", err)
			return
		}
		page.Events = p.eventRows(evs)
		if more {
			page.Next = nextPage(q, evs[len(evs)-1].Seq)
		}
	case "credentials":
		// The event type and refusal code filter events, not credentials.
		f.Code, f.Type, f.AfterSeq = "", "", after
		cs, more, err := p.svc.Credentials(r.Context(), v.Principal, f)
		if err != nil {
			p.fail(w, r, "", err)
			return
		}
		page.Credentials = p.credentialRows(cs)
		if more {
			page.Next = nextPage(q, cs[len(cs)-1].Seq)
		}
	default:
		p.refuse(w, r, "", broker.Errorf(broker.ErrInvalidRequest, "view is events, refusals or credentials"))
		return
	}
	if form.TaskID != "" {
		h, err := p.svc.TaskHistory(r.Context(), v.Principal, form.TaskID)
		if err != nil {
			p.fail(w, r, form.TaskID, err)
			return
		}
		page.Timeline = &timeline{
			ID: h.Task.ID, Status: string(h.Task.EffectiveStatus(p.now())), Agent: visible(p.naming.Agent(h.Task.Agent)),
			User: visible(p.naming.User(h.Task.User)), Goal: visible(h.Task.Goal),
			Events: p.eventRows(h.Events), Credentials: p.credentialRows(h.Credentials), Truncated: h.Truncated,
		}
	}
	if page.Chart, err = p.chart(r, v.Principal, f); err != nil {
		p.fail(w, r, "", err)
		return
	}
	p.render(w, r, http.StatusOK, "history", page)
}

// historyFilter reads the page's filters: the REST API's, plus view and
// after (the last seq of the previous page).
func historyFilter(q url.Values, form historyForm) (broker.HistoryFilter, int64, error) {
	for k, vs := range q {
		switch k {
		case "view", "task_id", "agent", "user", "type", "code", "since", "until", "after":
		default:
			return broker.HistoryFilter{}, 0, broker.Errorf(broker.ErrInvalidRequest, "unknown filter %q", k)
		}
		if len(vs) > 1 {
			return broker.HistoryFilter{}, 0, broker.Errorf(broker.ErrInvalidRequest, "filter %q given more than once", k)
		}
		if len(vs[0]) > 1024 || strings.ContainsFunc(vs[0], broker.DisplayUnsafe) {
			return broker.HistoryFilter{}, 0, broker.Errorf(broker.ErrInvalidRequest, "filter %q is too long or holds control characters", k)
		}
	}
	f := broker.HistoryFilter{TaskID: form.TaskID, Agent: form.Agent, User: form.User, Type: form.Type,
		Code: form.Code, Limit: historyLimit}
	var err error
	if f.Since, err = formTime("since", form.Since); err != nil {
		return f, 0, err
	}
	if f.Until, err = formTime("until", form.Until); err != nil {
		return f, 0, err
	}
	var after int64
	if a := q.Get("after"); a != "" {
		if after, err = strconv.ParseInt(a, 10, 64); err != nil || after < 0 {
			return f, 0, broker.Errorf(broker.ErrInvalidRequest, "after must be an event's seq")
		}
	}
	return f, after, nil
}

// formTime reads an RFC 3339 time, or the form's datetime-local value
// (minutes, UTC).
func formTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, broker.Errorf(broker.ErrInvalidRequest, "%s must be a time such as 2026-01-02T15:04 (UTC)", name)
}

func nextPage(q url.Values, after int64) string {
	n := url.Values{}
	for k, vs := range q {
		if k != "after" {
			n[k] = vs
		}
	}
	n.Set("after", strconv.FormatInt(after, 10))
	return HistoryPath + "?" + n.Encode()
}

func (p *Pages) eventRows(evs []broker.AuditEvent) []eventRow {
	out := make([]eventRow, 0, len(evs))
	for _, e := range evs {
		row := eventRow{Seq: e.Seq, Time: e.Time, Type: e.Type, TaskID: e.TaskID, Detail: visibleJSON(string(e.Detail)),
			Refused: e.Type == broker.EventRequestRefused, Actor: e.Actor.Kind}
		if e.Actor.Subject != "" {
			row.Actor = e.Actor.Kind + " " + p.actorName(e.Actor)
		}
		var d struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(e.Detail, &d) == nil {
			row.Code = d.Code
		}
		out = append(out, row)
	}
	return out
}

func (p *Pages) actorName(a broker.Actor) string {
	ref := broker.Ref{Issuer: a.Issuer, Subject: a.Subject}
	switch broker.Kind(a.Kind) {
	case broker.KindUser:
		return visible(p.naming.User(ref))
	case broker.KindAgent:
		return visible(p.naming.Agent(ref))
	}
	return visible(ref.String())
}

func (p *Pages) credentialRows(cs []broker.Credential) []credentialRow {
	out := make([]credentialRow, 0, len(cs))
	for _, c := range cs {
		out = append(out, credentialRow{
			JTI: c.ShownID(), Kind: string(c.Kind), TaskID: c.TaskID, Agent: visible(p.naming.Agent(c.Agent)), User: visible(p.naming.User(c.User)),
			Scopes: c.Scopes.Strings(), Audience: c.Audience, Issued: c.IssuedAt, Expires: c.ExpiresAt, Revoked: c.RevokedAt,
		})
	}
	return out
}
