package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/broker"
)

type createTaskBody = api.CreateTask

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	var b createTaskBody
	if !c.body(&b, false) {
		return
	}
	t, err := s.svc.CreateTask(r.Context(), p, broker.CreateTaskRequest{
		OnBehalfOf: b.OnBehalfOf, Goal: b.Goal, Scopes: b.Scopes, Audiences: b.Audiences,
		TTLSeconds: b.TTLSeconds, Tool: b.Tool, Dataset: b.Dataset,
		MaxCredentials: b.MaxCredentials, MaxResources: b.MaxResources, RequireDPoP: b.RequireDPoP,
	})
	if err != nil {
		c.fail(err)
		return
	}
	infoOf(r.Context()).set(func(ri *reqInfo) { ri.task = t.ID })
	w.Header().Set("Location", "/v1/tasks/"+t.ID)
	writeJSON(w, http.StatusCreated, s.renderTask(t))
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p, id := c.p, c.task
	t, err := s.svc.GetTask(r.Context(), p, id)
	if err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, s.renderTask(t))
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	lq, ok := c.listQuery("tasks")
	if !ok {
		return
	}
	ts, more, err := s.svc.ListTasks(r.Context(), c.p, broker.Status(lq.status), lq.after, lq.limit)
	if err != nil {
		c.fail(err)
		return
	}
	out := api.TaskList{Tasks: make([]taskJSON, 0, len(ts))}
	for _, t := range ts {
		out.Tasks = append(out.Tasks, s.renderTask(t))
	}
	if more {
		out.NextCursor = s.cursor(ts[len(ts)-1].Seq, lq.scope)
	}
	writeJSON(w, http.StatusOK, out)
}

type approveBody = api.Approve

func (s *Server) approveTask(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p, id := c.p, c.task
	var b approveBody
	if !c.body(&b, true) {
		return
	}
	t, err := s.svc.Approve(r.Context(), p, id, broker.ApproveRequest{
		Scopes: b.Scopes, Audiences: b.Audiences, TTLSeconds: b.TTLSeconds, Version: b.Version, Digest: b.Digest,
	})
	if err != nil {
		c.fail(err)
		return
	}
	s.metrics.decided("task", true, t.CreatedAt)
	writeJSON(w, http.StatusOK, s.renderTask(t))
}

func (s *Server) denyTask(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p, id := c.p, c.task
	var b api.Deny
	if !c.body(&b, true) {
		return
	}
	t, err := s.svc.Deny(r.Context(), p, id, broker.DenyRequest{Reason: b.Reason, Version: b.Version, Digest: b.Digest})
	if err != nil {
		c.fail(err)
		return
	}
	s.metrics.decided("task", false, t.CreatedAt)
	writeJSON(w, http.StatusOK, s.renderTask(t))
}

type mintBody = api.Mint

func (s *Server) mintToken(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p, id := c.p, c.task
	var b mintBody
	if !c.body(&b, false) {
		return
	}
	// A DPoP proof binds the token to its key (RFC 9449 §5).
	s.offerNonce(w)
	jkt, _, err := s.dpopKey(r)
	if err != nil {
		c.refuse(err)
		return
	}
	m, err := s.svc.Mint(r.Context(), p, id, broker.MintRequest{
		Scopes: b.Scopes, Audience: b.Audience, TTLSeconds: b.TTLSeconds, Tool: b.Tool, Dataset: b.Dataset,
		IdempotencyKey: r.Header.Get("Idempotency-Key"), JKT: jkt,
	})
	if err != nil {
		c.fail(err)
		return
	}
	if m.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	} else {
		s.metrics.issued.Inc()
	}
	writeJSON(w, http.StatusCreated, mintedJSON{
		AccessToken: m.Token, TokenType: tokenType(m.Credential), IssuedTokenType: "urn:ietf:params:oauth:token-type:jwt",
		ExpiresIn: m.ExpiresIn, Scope: strings.Join(m.Credential.Scopes.Strings(), " "),
		JTI: m.Credential.ID, TaskID: m.Credential.TaskID, Audience: m.Credential.Audience,
	})
}

type mintedJSON = api.Token

func (s *Server) closeTask(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p, id := c.p, c.task
	var b struct{}
	if !c.body(&b, true) {
		return
	}
	t, n, err := s.svc.Close(r.Context(), p, id)
	if err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, api.ClosedTask{Task: s.renderTask(t), Revoked: n})
}

// introspect is RFC 7662 §2: a form POST with token=, answered with the
// token's claims when active and exactly {"active": false} otherwise.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
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
	in, err := s.svc.Introspect(r.Context(), p, tok)
	if err != nil {
		c.fail(err)
		return
	}
	if !in.Active {
		writeJSON(w, http.StatusOK, inactiveJSON{})
		return
	}
	t := in.Token
	// A struct, not a map: introspection is the hottest path, and a map's
	// keys are sorted and its values boxed at every call.
	out := IntrospectionResponse{
		Active: true, Iss: s.self, Scope: t.Scope, ClientID: t.ClientID, Sub: t.Subject,
		Act: ActClaim{Sub: t.Act.Subject, Iss: t.Act.Issuer}, Aud: t.Audience, TaskID: t.TaskID,
		JTI: t.JTI, TokenType: tokenType(in.Credential), Exp: t.ExpiresAt.Unix(), Iat: t.IssuedAt.Unix(), Nbf: t.NotBefore.Unix(),
	}
	// The binding is the record's (RFC 9449 §6.2), which the token's own
	// cnf was checked against.
	if in.Credential.JKT != "" {
		out.Cnf = &Confirmation{JKT: in.Credential.JKT}
	}
	writeJSON(w, http.StatusOK, out)
}

// inactiveJSON is RFC 7662's answer for anything not active: exactly
// {"active": false}.
type inactiveJSON struct {
	Active bool `json:"active"`
}

// ActClaim is RFC 8693's act claim: the agent acting for the user.
type ActClaim = api.Act

// Confirmation is RFC 7800's cnf with RFC 9449's jkt: the thumbprint of
// the key whose DPoP proofs must accompany the token.
type Confirmation = api.Confirmation

// IntrospectionResponse is RFC 7662's answer for an active token, as
// POST /v1/introspect writes it (the load tool's floor server writes the
// same).
type IntrospectionResponse = api.Introspection

func (s *Server) auditEvents(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	f, scope, err := s.historyFilter(r, p, "events")
	if err != nil {
		c.refuse(err)
		return
	}
	evs, more, err := s.svc.AuditEvents(r.Context(), p, f)
	if err != nil {
		c.fail(err)
		return
	}
	out := api.EventList{Events: renderEvents(evs)}
	if more {
		out.NextCursor = s.cursor(evs[len(evs)-1].Seq, scope)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) credentials(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	p := c.p
	f, scope, err := s.historyFilter(r, p, "credentials")
	if err != nil {
		c.refuse(err)
		return
	}
	cs, more, err := s.svc.Credentials(r.Context(), p, f)
	if err != nil {
		c.fail(err)
		return
	}
	out := api.CredentialList{Credentials: s.renderCredentials(cs)}
	if more {
		out.NextCursor = s.cursor(cs[len(cs)-1].Seq, scope)
	}
	writeJSON(w, http.StatusOK, out)
}

// historyFilter reads the allow-listed filters of the auditor endpoints.
// The returned scope binds cursors to the query and the auditor.
func (s *Server) historyFilter(r *http.Request, p broker.Principal, kind string) (broker.HistoryFilter, string, error) {
	q, err := allowQuery(r.URL.Query(), "task_id", "actor", "agent", "user", "type", "code", "since", "until", "cursor", "limit")
	if err != nil {
		return broker.HistoryFilter{}, "", err
	}
	f := broker.HistoryFilter{TaskID: q.Get("task_id"), Actor: q.Get("actor"), Type: q.Get("type"),
		Agent: q.Get("agent"), User: q.Get("user"), Code: q.Get("code")}
	if kind == "credentials" && f.Code != "" {
		return f, "", broker.Errorf(broker.ErrInvalidRequest, "code filters audit events, not credentials")
	}
	for name, v := range map[string]string{"task_id": f.TaskID, "actor": f.Actor, "type": f.Type, "agent": f.Agent, "user": f.User, "code": f.Code} {
		if len(v) > 1024 || !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
			return f, "", broker.Errorf(broker.ErrInvalidRequest, "%s is too long, not UTF-8, or holds control characters", name)
		}
	}
	if f.Since, err = parseTime("since", q.Get("since")); err != nil {
		return f, "", err
	}
	if f.Until, err = parseTime("until", q.Get("until")); err != nil {
		return f, "", err
	}
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return f, "", err
	}
	scope := strings.Join([]string{kind, f.TaskID, f.Actor, f.Type, f.Agent, f.User, f.Code, q.Get("since"), q.Get("until"),
		string(p.Kind), p.Ref().String()}, "\x00")
	if f.AfterSeq, err = s.parseCursor(q.Get("cursor"), scope); err != nil {
		return f, "", err
	}
	return f, scope, nil
}

// listQuery is a caller's list request: status, cursor and limit.
type listQuery struct {
	status, scope string
	after         int64
	limit         int
}

// listQuery reads ?status=&cursor=&limit= of a list of what; the cursor is
// bound to the list, the status and the caller. On failure it has answered.
func (c *call) listQuery(what string) (listQuery, bool) {
	q, err := allowQuery(c.r.URL.Query(), "status", "cursor", "limit")
	if err != nil {
		c.refuse(err)
		return listQuery{}, false
	}
	lq := listQuery{status: q.Get("status")}
	if lq.limit, err = parseLimit(q.Get("limit")); err != nil {
		c.refuse(err)
		return listQuery{}, false
	}
	lq.scope = what + "|" + lq.status + "|" + string(c.p.Kind) + "|" + c.p.Ref().String()
	if lq.after, err = c.s.parseCursor(q.Get("cursor"), lq.scope); err != nil {
		c.refuse(err)
		return listQuery{}, false
	}
	return lq, true
}

// allowQuery refuses any query parameter not in names, and repeated ones.
func allowQuery(q url.Values, names ...string) (url.Values, error) {
	for k, vs := range q {
		ok := false
		for _, n := range names {
			if k == n {
				ok = true
			}
		}
		if !ok {
			return nil, broker.Errorf(broker.ErrInvalidRequest, "unknown query parameter %q", k)
		}
		if len(vs) > 1 {
			return nil, broker.Errorf(broker.ErrInvalidRequest, "query parameter %q given more than once", k)
		}
	}
	return q, nil
}

// Pagination limits: default 100, larger requests are clamped to 1000.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

func parseLimit(v string) (int, error) {
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, broker.Errorf(broker.ErrInvalidRequest, "limit must be a positive integer")
	}
	return min(n, maxLimit), nil
}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, broker.Errorf(broker.ErrInvalidRequest, "%s must be an RFC 3339 time", name)
	}
	return t, nil
}

type taskJSON = api.Task

func (s *Server) renderTask(t broker.Task) taskJSON {
	return taskJSON{
		ID: t.ID, Status: string(s.svc.StatusOf(t)), Version: t.Version, Digest: t.Digest(),
		Agent: t.Agent.String(), OnBehalfOf: s.userName(t.User), Goal: t.Goal,
		Scopes: t.Scopes.Strings(), ApprovedScopes: t.ApprovedScopes.Strings(),
		Audiences: nonNil(t.Audiences), ApprovedAudiences: nonNil(t.ApprovedAudiences),
		Risk: string(t.Risk), Tool: t.Tool, Dataset: t.Dataset, TTLCapped: t.TTLCapped,
		DenyReason: t.DenyReason, CreatedAt: t.CreatedAt.Format(time.RFC3339Nano),
		ApprovedAt: optTime(t.ApprovedAt), ExpiresAt: t.ExpiresAt.Format(time.RFC3339Nano),
		ClosedAt: optTime(t.ClosedAt), MaxCredentials: t.Budget.MaxCredentials, MaxResources: t.Budget.MaxResources,
		RequireDPoP:  t.RequireDPoP,
		ScopeDetails: s.scopeDetails(t.Scopes, t.ApprovedScopes),
	}
}

// userName writes a user back as on_behalf_of was written: the bare sub
// when one user issuer is configured, <issuer>#<sub> otherwise.
func (s *Server) userName(u broker.Ref) string {
	if len(s.users) == 1 && s.users[0] == u.Issuer {
		return u.Subject
	}
	return u.String()
}

type credentialJSON = api.Credential

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.Format(time.RFC3339Nano)
	return &s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func renderEvents(evs []broker.AuditEvent) []api.Event {
	out := make([]api.Event, 0, len(evs))
	for _, e := range evs {
		detail := json.RawMessage(e.Detail)
		if len(detail) == 0 {
			detail = json.RawMessage("{}")
		}
		out = append(out, api.Event{
			Seq: e.Seq, Time: e.Time.Format(time.RFC3339Nano), Type: e.Type,
			Actor:  api.Actor{Kind: e.Actor.Kind, Issuer: e.Actor.Issuer, Subject: e.Actor.Subject},
			TaskID: e.TaskID, Detail: detail, Hash: e.Hash,
		})
	}
	return out
}

func (s *Server) renderCredentials(cs []broker.Credential) []credentialJSON {
	out := make([]credentialJSON, 0, len(cs))
	for _, c := range cs {
		out = append(out, credentialJSON{
			JTI: c.ShownID(), Kind: string(c.Kind), TaskID: c.TaskID, Agent: c.Agent.String(),
			OnBehalfOf: s.userName(c.User), Scopes: c.Scopes.Strings(), Audience: c.Audience,
			IssuedAt: c.IssuedAt.Format(time.RFC3339), ExpiresAt: c.ExpiresAt.Format(time.RFC3339),
			RevokedAt: optTime(c.RevokedAt),
		})
	}
	return out
}

// taskHistory is one task's timeline, for auditors.
func (s *Server) taskHistory(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	if _, err := allowQuery(r.URL.Query()); err != nil {
		c.refuse(err)
		return
	}
	h, err := s.svc.TaskHistory(r.Context(), c.p, c.task)
	if err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, api.History{
		Task: s.renderTask(h.Task), Events: renderEvents(h.Events),
		Credentials: s.renderCredentials(h.Credentials), Truncated: h.Truncated,
	})
}

// issueSecret hands the task's agent a Vault dynamic secret: its data and
// lease metadata, never a Vault token.
func (s *Server) issueSecret(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	var b api.SecretRequest
	if !c.body(&b, false) {
		return
	}
	sec, err := s.svc.IssueSecret(r.Context(), c.p, c.task, b.Role)
	if err != nil {
		c.fail(err)
		return
	}
	s.metrics.issued.Inc()
	writeJSON(w, http.StatusCreated, api.Secret{
		LeaseID: sec.LeaseID, LeaseDuration: int64(sec.LeaseDuration / time.Second),
		Renewable: false, Data: sec.Data,
	})
}
