package broker

import (
	"sort"
	"strings"
	"time"
)

// Operations a policy is asked about, given to policies as context.operation.
const (
	OpCreate   = "create"   // an agent asks for a task
	OpApprove  = "approve"  // the user approves it
	OpMint     = "mint"     // the agent asks for an access token
	OpSecret   = "secret"   // the agent asks for a Vault secret
	OpIDJAG    = "id-jag"   // the agent asks for an ID-JAG
	OpEvaluate = "evaluate" // an enforcement point asks (AuthZEN)
)

// Effect is a policy outcome.
type Effect int

const (
	// EffectDeny: a forbid matched, or no permit did.
	EffectDeny Effect = iota
	// EffectAllow: a permit matched and no forbid did.
	EffectAllow
	// EffectStepUp: a permit matched, and only forbids marked
	// @step_up did: the user must approve this exact request.
	EffectStepUp
)

func (e Effect) String() string {
	switch e {
	case EffectAllow:
		return "allow"
	case EffectStepUp:
		return "step-up"
	}
	return "deny"
}

// PolicyRequest is one access a policy decides on: one action over one
// resource, for one audience, in context.
type PolicyRequest struct {
	Operation   string
	TaskID      string
	Agent       Ref
	User        Ref
	Groups      []string // the user's groups, as User's issuer names them; none before approval
	Action      string
	Resource    string
	Class       Class
	Risk        Risk
	Audience    string
	Environment string
	Tool        string
	Dataset     string
	Time        time.Time
	// DPoP is set when the tokens the request is about are bound to a
	// DPoP key: a mint with a proof, a task that requires one, an
	// evaluated token that is bound (context.dpop).
	DPoP bool
	// SeveralUserIssuers is set when more than one user issuer is
	// configured: a group name alone is then ambiguous (partner's "eng"
	// is not corp's), and policies know a group only as
	// <User's issuer>#<name>.
	SeveralUserIssuers bool
}

// PolicyDecision is what the policies said and why: the ids of the
// policies that decided, and the @step_up reasons.
type PolicyDecision struct {
	Effect   Effect
	Policies []string
	Reasons  []string
}

// Policy is the organisation's request-time rules (policy-as-code). It
// adds to the invariants and can never loosen them: the broker asks it only
// about requests the invariants already allow.
type Policy interface {
	Decide(PolicyRequest) PolicyDecision
}

// decideAll asks the policy about each scope for each audience and joins
// the answers: any deny denies, otherwise any step-up steps up.
func (s *Service) decideAll(base PolicyRequest, scopes Scopes, audiences []string) PolicyDecision {
	out := PolicyDecision{Effect: EffectAllow}
	if s.policy == nil {
		return out
	}
	var deny, step PolicyDecision
	for _, sc := range scopes {
		for _, aud := range audiences {
			r := base
			r.Action, r.Resource, r.Audience = sc.Action, sc.ResourcePath(), aud
			r.SeveralUserIssuers = len(s.users) > 1
			if a, ok := s.catalog.Action(sc.Action); ok {
				r.Class, r.Risk = a.Class, a.Risk
			}
			if au, ok := s.catalog.Audience(aud); ok {
				r.Environment = au.Environment
				// Scopes enter canonical (Catalog.Canonical); this holds
				// the rule for any that did not, such as a task's from
				// before the audience was made case-insensitive.
				if au.CaseInsensitive {
					r.Resource = strings.ToLower(r.Resource)
				}
			}
			d := s.policy.Decide(r)
			switch d.Effect {
			case EffectDeny:
				deny.Effect = EffectDeny
				deny.Policies = append(deny.Policies, d.Policies...)
				deny.Reasons = append(deny.Reasons, d.Reasons...)
				out.Effect = EffectDeny
			case EffectStepUp:
				step.Policies = append(step.Policies, d.Policies...)
				step.Reasons = append(step.Reasons, d.Reasons...)
				if out.Effect == EffectAllow {
					out.Effect = EffectStepUp
				}
			}
		}
	}
	switch out.Effect {
	case EffectDeny:
		out.Policies, out.Reasons = uniq(deny.Policies), uniq(deny.Reasons)
	case EffectStepUp:
		out.Policies, out.Reasons = uniq(step.Policies), uniq(step.Reasons)
	}
	return out
}

// policyDenied is the refusal of a deny decision, naming the policies.
func policyDenied(d PolicyDecision) error {
	ids := d.Policies
	if len(ids) == 0 {
		ids = []string{}
	}
	msg := "no policy permits this request"
	if len(d.Policies) > 0 {
		msg = "forbidden by policy " + strings.Join(d.Policies, ", ")
	}
	if len(d.Reasons) > 0 {
		msg += ": " + strings.Join(d.Reasons, "; ")
	}
	return &Error{Code: ErrPolicyDenied.Code, Detail: msg, Policies: ids}
}

func uniq(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	sort.Strings(in)
	out := in[:1]
	for _, v := range in[1:] {
		if v != out[len(out)-1] {
			out = append(out, v)
		}
	}
	return out
}

// stepUpPolicies names the step-up policies that matched, for the record.
func (d PolicyDecision) stepUpPolicies() []string {
	if d.Effect != EffectStepUp {
		return []string{}
	}
	return d.Policies
}
