package httpapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/broker"
)

// approvalJSON is a step-up approval as agents, users and auditors see it.
type approvalJSON = api.Approval

func (s *Server) renderApproval(u broker.StepUp) approvalJSON {
	return approvalJSON{
		ID: u.ID, TaskID: u.TaskID, Status: string(s.svc.StepUpStatusOf(u)), Agent: u.Agent.String(),
		OnBehalfOf: s.userName(u.User), Scopes: u.Scopes.Strings(), Audience: u.Audience,
		Tool: u.Tool, Dataset: u.Dataset, Policies: nonNil(u.Policies), Reasons: nonNil(u.Reasons),
		DenyReason: u.DenyReason, CreatedAt: u.CreatedAt.Format(time.RFC3339Nano),
		ExpiresAt: u.ExpiresAt.Format(time.RFC3339Nano), DecidedAt: optTime(u.DecidedAt), UsedAt: optTime(u.UsedAt),
		ScopeDetails: s.scopeDetails(u.Scopes),
	}
}

// listApprovals lists the caller's step-up approvals: a user's to decide,
// an agent's to wait for.
func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	lq, ok := c.listQuery("approvals")
	if !ok {
		return
	}
	us, more, err := s.svc.ListStepUps(r.Context(), c.p, broker.StepUpStatus(lq.status), lq.after, lq.limit)
	if err != nil {
		c.fail(err)
		return
	}
	out := api.ApprovalList{Approvals: make([]approvalJSON, 0, len(us))}
	for _, u := range us {
		out.Approvals = append(out.Approvals, s.renderApproval(u))
	}
	if more {
		out.NextCursor = s.cursor(us[len(us)-1].Seq, lq.scope)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	u, err := s.svc.GetStepUp(r.Context(), c.p, chi.URLParam(r, "approval"))
	if err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, s.renderApproval(u))
}

func (s *Server) approveApproval(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	var b struct{}
	if !c.body(&b, true) {
		return
	}
	s.decideApproval(c, true, "")
}

func (s *Server) denyApproval(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	var b struct {
		Reason string `json:"reason"`
	}
	if !c.body(&b, true) {
		return
	}
	s.decideApproval(c, false, b.Reason)
}

func (s *Server) decideApproval(c *call, approve bool, reason string) {
	u, err := s.svc.DecideStepUp(c.r.Context(), c.p, chi.URLParam(c.r, "approval"), approve, reason)
	if err != nil {
		c.fail(err)
		return
	}
	s.metrics.decided("step_up", approve, u.CreatedAt)
	writeJSON(c.w, http.StatusOK, s.renderApproval(u))
}

// AuthZEN request shapes (Authorization API 1.0 §6–8). Properties are
// accepted and not used: Errand decides on the token, the action, the
// resource and the context keys tool and dataset.
type (
	azSubject struct {
		Type       string         `json:"type"`
		ID         string         `json:"id"`
		Properties map[string]any `json:"properties"`
	}
	azAction struct {
		Name       string         `json:"name"`
		Properties map[string]any `json:"properties"`
	}
	azResource struct {
		Type       string         `json:"type"`
		ID         string         `json:"id"`
		Properties map[string]any `json:"properties"`
	}
	azRequest struct {
		Subject  *azSubject     `json:"subject"`
		Action   *azAction      `json:"action"`
		Resource *azResource    `json:"resource"`
		Context  map[string]any `json:"context"`
	}
	azBatch struct {
		azRequest
		Evaluations []azRequest `json:"evaluations"`
		Options     *struct {
			EvaluationsSemantic string `json:"evaluations_semantic"`
		} `json:"options"`
	}
)

// SubjectTypeToken is the AuthZEN subject type of an Errand access token.
const SubjectTypeToken = "errand_token"

// maxEvaluations bounds one batch.
const maxEvaluations = 64

// toEvaluation checks an AuthZEN request and maps it to the broker's.
func toEvaluation(q azRequest) (broker.EvaluationRequest, error) {
	switch {
	case q.Subject == nil || q.Subject.Type != SubjectTypeToken || q.Subject.ID == "":
		return broker.EvaluationRequest{}, broker.Errorf(broker.ErrInvalidRequest, "subject must be {\"type\": %q, \"id\": <access token>}", SubjectTypeToken)
	case q.Action == nil || q.Action.Name == "":
		return broker.EvaluationRequest{}, broker.Errorf(broker.ErrInvalidRequest, "action.name is required")
	case q.Resource == nil || q.Resource.Type == "" || q.Resource.ID == "":
		return broker.EvaluationRequest{}, broker.Errorf(broker.ErrInvalidRequest, "resource.type and resource.id are required")
	}
	out := broker.EvaluationRequest{Token: q.Subject.ID, Action: q.Action.Name,
		ResourceType: q.Resource.Type, ResourceID: q.Resource.ID}
	for k, v := range q.Context {
		if k != "tool" && k != "dataset" {
			continue
		}
		str, ok := v.(string)
		if !ok {
			return broker.EvaluationRequest{}, broker.Errorf(broker.ErrInvalidRequest, "context.%s must be a string", k)
		}
		if k == "tool" {
			out.Tool = str
		} else {
			out.Dataset = str
		}
	}
	return out, nil
}

func (s *Server) decide(c *call, q broker.EvaluationRequest) (api.Evaluation, error) {
	ev, err := s.svc.Evaluate(c.r.Context(), c.p, q)
	if err != nil {
		return api.Evaluation{}, err
	}
	label := "deny"
	if ev.Decision {
		label = "permit"
	}
	s.metrics.decisions.WithLabelValues(label).Inc()
	return api.Evaluation{Decision: ev.Decision, Context: api.EvaluationContext{ReasonAdmin: api.Reason{En: ev.Reason}, Policies: ev.Policies}}, nil
}

// evaluation is the AuthZEN access evaluation API: may the bearer of this
// Errand token do this action on this resource, now?
func (s *Server) evaluation(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	var b azRequest
	if !c.body(&b, false) {
		return
	}
	q, err := toEvaluation(b)
	if err != nil {
		c.refuse(err)
		return
	}
	d, err := s.decide(c, q)
	if err != nil {
		c.fail(err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// evaluations is the AuthZEN access evaluations (batch) API: top-level
// subject, action, resource and context are defaults each evaluation may
// override; options.evaluations_semantic is execute_all (the default),
// deny_on_first_deny or permit_on_first_permit.
func (s *Server) evaluations(w http.ResponseWriter, r *http.Request) {
	c := s.begin(w, r)
	if c == nil {
		return
	}
	var b azBatch
	if !c.body(&b, false) {
		return
	}
	semantic := "execute_all"
	if b.Options != nil && b.Options.EvaluationsSemantic != "" {
		semantic = b.Options.EvaluationsSemantic
	}
	switch semantic {
	case "execute_all", "deny_on_first_deny", "permit_on_first_permit":
	default:
		c.refuse(broker.Errorf(broker.ErrInvalidRequest, "unknown evaluations_semantic %q", semantic))
		return
	}
	items := b.Evaluations
	if len(items) == 0 {
		items = []azRequest{{}} // no list: one evaluation of the defaults
	}
	if len(items) > maxEvaluations {
		c.refuse(broker.Errorf(broker.ErrInvalidRequest, "at most %d evaluations per request", maxEvaluations))
		return
	}
	qs := make([]broker.EvaluationRequest, len(items))
	for i, it := range items {
		merged := b.azRequest
		if it.Subject != nil {
			merged.Subject = it.Subject
		}
		if it.Action != nil {
			merged.Action = it.Action
		}
		if it.Resource != nil {
			merged.Resource = it.Resource
		}
		if it.Context != nil {
			merged.Context = it.Context
		}
		q, err := toEvaluation(merged)
		if err != nil {
			c.refuse(broker.Errorf(broker.ErrInvalidRequest, "evaluations[%d]: %s", i, err.(*broker.Error).Detail))
			return
		}
		qs[i] = q
	}
	out := struct {
		Evaluations []api.Evaluation `json:"evaluations"`
	}{Evaluations: make([]api.Evaluation, 0, len(qs))}
	for _, q := range qs {
		d, err := s.decide(c, q)
		if err != nil {
			c.fail(err)
			return
		}
		out.Evaluations = append(out.Evaluations, d)
		if semantic == "deny_on_first_deny" && !d.Decision || semantic == "permit_on_first_permit" && d.Decision {
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// authzenMetadata is the AuthZEN policy decision point metadata.
func (s *Server) authzenMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSONCached(w, map[string]any{
		"policy_decision_point":       s.self,
		"access_evaluation_endpoint":  s.self + "/access/v1/evaluation",
		"access_evaluations_endpoint": s.self + "/access/v1/evaluations",
	})
}
