package web

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/errandhq/errand/broker"
)

// queueLimit is how many pending tasks and approvals the queue shows.
const queueLimit = 200

type queuePage struct {
	chrome
	Tasks         []queueRow
	MoreTasks     bool
	Approvals     []approvalRow
	MoreApprovals bool
}

type queueRow struct {
	ID, Goal, Agent, User, Risk, Age string
	Scopes                           int
}

type approvalRow struct {
	ID, TaskID, Agent, Audience, Age string
	Scopes                           []string
}

// queue is what waits for the signed-in person: their pending tasks and
// step-up approvals, oldest first.
func (p *Pages) queue(w http.ResponseWriter, r *http.Request) {
	v := p.viewerOf(r)
	ts, more, err := p.svc.ListTasks(r.Context(), v.Principal, broker.StatusPending, 0, queueLimit)
	if err != nil {
		p.fail(w, r, "", err)
		return
	}
	us, moreU, err := p.svc.ListStepUps(r.Context(), v.Principal, broker.StepUpPending, 0, queueLimit)
	if err != nil {
		p.fail(w, r, "", err)
		return
	}
	now := p.now()
	page := queuePage{chrome: p.chrome(v), MoreTasks: more, MoreApprovals: moreU}
	for _, t := range ts {
		page.Tasks = append(page.Tasks, queueRow{
			ID: t.ID, Goal: visible(t.Goal), Agent: visible(p.naming.Agent(t.Agent)), User: visible(p.naming.User(t.User)),
			Risk: string(t.Risk), Age: relative(t.CreatedAt, now), Scopes: len(t.Scopes),
		})
	}
	for _, u := range us {
		page.Approvals = append(page.Approvals, approvalRow{
			ID: u.ID, TaskID: u.TaskID, Agent: visible(p.naming.Agent(u.Agent)), Audience: u.Audience,
			Age: relative(u.CreatedAt, now), Scopes: u.Scopes.Strings(),
		})
	}
	p.render(w, r, http.StatusOK, "queue", page)
}

// taskPage is a task as its page shows it: what is decided first, the
// agent's words after.
type taskPage struct {
	chrome
	ID, Status   string
	Version      int
	Digest       string
	Agent, User  string
	Risk         string
	Created      time.Time
	Age          string
	Expires      time.Time
	ExpiresIn    string
	Scopes       []scopeRow
	Approved     []scopeRow
	Audiences    []audienceRow
	Tool         string
	Dataset      string
	HasTool      bool
	HasDataset   bool
	MaxCreds     int
	MaxResources int
	RequireDPoP  bool
	TTLCapped    bool
	Goal         string
	DenyReason   string
	// CanDecide: the viewer is the task's user and it is pending.
	CanDecide bool
	// IsUser: the viewer is the task's user.
	IsUser  bool
	Decided bool
}

func (p *Pages) task(w http.ResponseWriter, r *http.Request) {
	v := p.viewerOf(r)
	id := chi.URLParam(r, "id")
	t, err := p.svc.GetTask(r.Context(), v.Principal, id)
	if err != nil {
		p.fail(w, r, id, err)
		return
	}
	now := p.now()
	st := t.EffectiveStatus(now)
	auds := t.Audiences
	page := taskPage{
		chrome: p.chrome(v), ID: t.ID, Status: string(st), Version: t.Version, Digest: t.Digest(),
		Agent: visible(p.naming.Agent(t.Agent)), User: visible(p.naming.User(t.User)), Risk: string(t.Risk),
		Created: t.CreatedAt, Age: relative(t.CreatedAt, now), Expires: t.ExpiresAt, ExpiresIn: relative(t.ExpiresAt, now),
		Scopes:    p.scopeRows(v.Principal, t.Scopes, t.ApprovedScopes, auds),
		Audiences: p.audienceRows(t.Audiences, t.ApprovedAudiences),
		Tool:      visible(t.Tool), Dataset: visible(t.Dataset), HasTool: t.Tool != "", HasDataset: t.Dataset != "",
		MaxCreds: t.Budget.MaxCredentials, MaxResources: t.Budget.MaxResources, RequireDPoP: t.RequireDPoP,
		TTLCapped: t.TTLCapped, Goal: visible(t.Goal), DenyReason: visible(t.DenyReason),
		IsUser:  v.Principal.Is(broker.KindUser, t.User),
		Decided: !t.ApprovedAt.IsZero(),
	}
	page.CanDecide = page.IsUser && st == broker.StatusPending
	if page.Decided {
		page.Approved = p.scopeRows(v.Principal, t.ApprovedScopes, t.ApprovedScopes, t.ApprovedAudiences)
	}
	p.render(w, r, http.StatusOK, "task", page)
}

// approveTask approves a task as its page showed it: all of it, or the
// scopes and audiences checked, each scope's resource possibly narrowed.
// The approval names the version and digest the page showed, so a task
// that changed since is refused (task_changed), never approved unseen;
// what the approval may hold is decided by the broker alone, exactly as
// for POST /v1/tasks/{id}/approve.
func (p *Pages) approveTask(w http.ResponseWriter, r *http.Request) {
	v := p.viewerOf(r)
	id := chi.URLParam(r, "id")
	f := r.PostForm
	req, err := approvalOf(f)
	if err != nil {
		p.refuse(w, r, id, err)
		return
	}
	t, err := p.svc.Approve(r.Context(), v.Principal, id, req)
	if err != nil {
		p.fail(w, r, id, err)
		return
	}
	p.api.Decided("task", true, t.CreatedAt)
	http.Redirect(w, r, TaskPath+url.PathEscape(t.ID), http.StatusSeeOther)
}

// approvalOf reads an approval form: version and digest (required: the
// page always sends what it showed), and for a narrower approval
// (mode=selected) the checked scopes, each with the resource typed in
// its place, and the checked audiences.
func approvalOf(f url.Values) (broker.ApproveRequest, error) {
	var req broker.ApproveRequest
	var err error
	if req.Version, req.Digest, err = boundTo(f); err != nil {
		return req, err
	}
	if m := f.Get("ttl_minutes"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n <= 0 {
			return req, broker.Errorf(broker.ErrInvalidRequest, "the shorter life must be a positive number of minutes")
		}
		req.TTLSeconds = int64(n) * 60
	}
	switch f.Get("mode") {
	case "all":
		return req, nil
	case "selected":
	default:
		return req, broker.Errorf(broker.ErrInvalidRequest, "approve all, or approve the selected scopes")
	}
	req.Scopes = []string{}
	for _, sc := range f["scope"] {
		s, err := broker.ParseScope(sc)
		if err != nil {
			return req, err
		}
		if narrow := strings.TrimSpace(f.Get("resource:" + sc)); narrow != "" && narrow != s.ResourcePath() {
			sc = s.Action + ":" + narrow
		}
		req.Scopes = append(req.Scopes, sc)
	}
	req.Audiences = append([]string{}, f["audience"]...)
	if len(req.Scopes) == 0 || len(req.Audiences) == 0 {
		return req, broker.Errorf(broker.ErrInvalidRequest, "select at least one scope and one audience, or deny the task")
	}
	return req, nil
}

// boundTo reads the version and digest a decision form carries.
func boundTo(f url.Values) (int, string, error) {
	version, err := strconv.Atoi(f.Get("version"))
	if err != nil || version <= 0 || f.Get("digest") == "" {
		return 0, "", broker.Errorf(broker.ErrInvalidRequest, "the form must name the task's version and digest as the page showed them")
	}
	return version, f.Get("digest"), nil
}

func (p *Pages) denyTask(w http.ResponseWriter, r *http.Request) {
	v := p.viewerOf(r)
	id := chi.URLParam(r, "id")
	version, digest, err := boundTo(r.PostForm)
	if err != nil {
		p.refuse(w, r, id, err)
		return
	}
	t, err := p.svc.Deny(r.Context(), v.Principal, id, broker.DenyRequest{
		Reason: strings.TrimSpace(r.PostForm.Get("reason")), Version: version, Digest: digest,
	})
	if err != nil {
		p.fail(w, r, id, err)
		return
	}
	p.api.Decided("task", false, t.CreatedAt)
	http.Redirect(w, r, TaskPath+url.PathEscape(t.ID), http.StatusSeeOther)
}

// approvalPage is a step-up approval: the one request it allows, then the
// task it belongs to, then the agent's words.
type approvalPage struct {
	chrome
	ID, TaskID  string
	Status      string
	Agent, User string
	Scopes      []scopeRow
	Audience    audienceRow
	Tool        string
	Dataset     string
	HasTool     bool
	HasDataset  bool
	Policies    []string
	Reasons     []string
	Created     time.Time
	Age         string
	Expires     time.Time
	ExpiresIn   string
	DenyReason  string
	Goal        string
	HasTask     bool
	CanDecide   bool
	// CanLift: a denied approval its user may still approve (which lifts
	// the denial, as POST /v1/approvals/{id}/approve does).
	CanLift bool
}

func (p *Pages) approval(w http.ResponseWriter, r *http.Request) {
	v := p.viewerOf(r)
	id := chi.URLParam(r, "approval")
	u, err := p.svc.GetStepUp(r.Context(), v.Principal, id)
	if err != nil {
		p.fail(w, r, "", err)
		return
	}
	now := p.now()
	st := u.EffectiveStatus(now)
	page := approvalPage{
		chrome: p.chrome(v), ID: u.ID, TaskID: u.TaskID, Status: string(st),
		Agent: visible(p.naming.Agent(u.Agent)), User: visible(p.naming.User(u.User)),
		Scopes:   p.scopeRows(v.Principal, u.Scopes, nil, []string{u.Audience}),
		Audience: p.audienceRows([]string{u.Audience}, nil)[0],
		Tool:     visible(u.Tool), Dataset: visible(u.Dataset), HasTool: u.Tool != "", HasDataset: u.Dataset != "",
		Policies: u.Policies, Reasons: u.Reasons,
		Created: u.CreatedAt, Age: relative(u.CreatedAt, now), Expires: u.ExpiresAt, ExpiresIn: relative(u.ExpiresAt, now),
		DenyReason: visible(u.DenyReason),
	}
	isUser := v.Principal.Is(broker.KindUser, u.User)
	page.CanDecide = isUser && st == broker.StepUpPending
	page.CanLift = isUser && st == broker.StepUpDenied
	if t, err := p.svc.GetTask(r.Context(), v.Principal, u.TaskID); err == nil {
		page.HasTask, page.Goal = true, visible(t.Goal)
	}
	p.render(w, r, http.StatusOK, "approval", page)
}

func (p *Pages) approveStepUp(w http.ResponseWriter, r *http.Request) { p.decideStepUp(w, r, true) }
func (p *Pages) denyStepUp(w http.ResponseWriter, r *http.Request)    { p.decideStepUp(w, r, false) }

// decideStepUp decides a step-up approval as POST /v1/approvals/{id}/…
// does. A step-up's request never changes once asked, so there is nothing
// to bind but its id; a decided one is refused (task_not_active).
func (p *Pages) decideStepUp(w http.ResponseWriter, r *http.Request, approve bool) {
	v := p.viewerOf(r)
	id := chi.URLParam(r, "approval")
	reason := ""
	if !approve {
		reason = strings.TrimSpace(r.PostForm.Get("reason"))
	}
	u, err := p.svc.DecideStepUp(r.Context(), v.Principal, id, approve, reason)
	if err != nil {
		p.fail(w, r, "", err)
		return
	}
	p.api.Decided("step_up", approve, u.CreatedAt)
	http.Redirect(w, r, ApprovalPath+url.PathEscape(u.ID), http.StatusSeeOther)
}
