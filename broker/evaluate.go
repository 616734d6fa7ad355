package broker

import (
	"context"
	"fmt"
)

// EvaluationRequest is an enforcement point's question (OpenID AuthZEN
// Authorization API 1.0, access evaluation): may the bearer of Token do
// Action on the resource, in this context?
type EvaluationRequest struct {
	Token        string
	Action       string
	ResourceType string
	ResourceID   string
	Tool         string
	Dataset      string
}

// Evaluation is the decision and, for the administrator, why.
type Evaluation struct {
	Decision bool
	Reason   string
	Policies []string
}

func refuse(format string, args ...any) Evaluation {
	return Evaluation{Reason: fmt.Sprintf(format, args...)}
}

// Evaluate decides one access for a resource server: true only if the token
// is active for this caller (as introspection says), one of its scopes
// covers the action on the resource, the action is grantable, and the
// policies allow it now. A @step_up policy is satisfied only by a token
// minted under the user's step-up approval. Every "no" is a decision, not
// an error; only an outage is an error.
func (s *Service) Evaluate(ctx context.Context, p Principal, req EvaluationRequest) (_ Evaluation, err error) {
	defer func() { err = s.refused(ctx, p, "", OpEvaluate, err) }()
	if p.Kind != KindResource {
		return Evaluation{}, Errorf(ErrWrongPrincipalKind, "only resource servers ask for decisions")
	}
	if err := checkText("tool", req.Tool, maxLabelBytes, false); err != nil {
		return Evaluation{}, err
	}
	if err := checkText("dataset", req.Dataset, maxLabelBytes, false); err != nil {
		return Evaluation{}, err
	}
	in, err := s.introspect(ctx, p, req.Token)
	if err != nil {
		return Evaluation{}, err
	}
	if !in.Active {
		return refuse("the token is not active"), nil
	}
	sc, err := ParseScope(req.Action + ":" + req.ResourceID)
	if err != nil {
		return refuse("the action or resource is malformed: %s", CodeOf(err)), nil
	}
	if sc.ResourcePath() != req.ResourceID || containsWildcard(sc) {
		return refuse("the resource must be one concrete path"), nil
	}
	if err := s.catalog.CheckGrantable(Scopes{sc}); err != nil {
		return refuse("the action is not grantable: %s", CodeOf(err)), nil
	}
	// acme/INFRA/secrets at a case-insensitive audience is acme/infra/secrets,
	// for the token's scope and for the policies alike.
	if s.catalog.CaseInsensitive(in.Credential.Audience) {
		sc = sc.Lower()
	}
	if !in.Credential.Scopes.Covers(sc) {
		return refuse("the token's scope does not cover %s", sc), nil
	}
	// The enforcement point reports the tool and dataset really used; the
	// task's, when it named them, bind them as at a mint.
	tool, dataset, err := boundLabels(in.Task, req.Tool, req.Dataset)
	if err != nil {
		return refuse("%s", err.(*Error).Detail), nil
	}
	d := s.decideAll(PolicyRequest{
		Operation: OpEvaluate, TaskID: in.Task.ID, Agent: in.Task.Agent, User: in.Task.User,
		Groups: in.Task.UserGroups, Tool: tool, Dataset: dataset, Time: in.Now, DPoP: in.Credential.JKT != "",
	}, Scopes{sc}, []string{in.Credential.Audience})
	switch d.Effect {
	case EffectAllow:
		return Evaluation{Decision: true, Reason: "allowed", Policies: d.Policies}, nil
	case EffectStepUp:
		return s.underStepUp(ctx, in.Credential, d, tool, dataset)
	}
	return Evaluation{Reason: policyDenied(d).(*Error).Detail, Policies: d.Policies}, nil
}

// underStepUp allows what step-up policies guard only for a token minted
// under the user's approval of those very policies, for this tool and
// dataset: an approval of one rule is no approval of another.
func (s *Service) underStepUp(ctx context.Context, c Credential, d PolicyDecision, tool, dataset string) (Evaluation, error) {
	if c.StepUpID == "" {
		return Evaluation{Reason: "a step-up policy asks for the user's approval, and this token was not minted under one", Policies: d.Policies}, nil
	}
	r := s.store
	u, err := r.StepUp(ctx, c.StepUpID)
	if err != nil {
		return Evaluation{}, err
	}
	if u.Tool != tool || u.Dataset != dataset {
		return Evaluation{Reason: "the user approved this token for another tool or dataset", Policies: d.Policies}, nil
	}
	for _, p := range d.Policies {
		if !contains(u.Policies, p) {
			return Evaluation{Reason: "the user's approval " + u.ID + " was not asked for by policy " + p, Policies: d.Policies}, nil
		}
	}
	return Evaluation{Decision: true, Reason: "allowed under step-up approval " + u.ID, Policies: d.Policies}, nil
}

func containsWildcard(sc Scope) bool {
	for _, seg := range sc.Resource {
		if seg == "*" || seg == "**" {
			return true
		}
	}
	return false
}
