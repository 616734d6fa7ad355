package policy

import (
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"

	"github.com/errandhq/errand/broker"
)

// Entity types of Errand's model (README, "Policies").
const (
	TypeAgent    = types.EntityType("Agent")
	TypeUser     = types.EntityType("User")
	TypeGroup    = types.EntityType("Group")
	TypeAction   = types.EntityType("Action")
	TypeResource = types.EntityType("Resource")
)

// cedarRequest maps one access to Cedar:
//
//	principal  Agent::"<issuer>#<sub>"   {issuer, sub, trust_domain,
//	           spiffe_path}; an agent of a SPIFFE trust domain is
//	           Agent::"<SPIFFE ID>", with trust_domain and the ID's path
//	           set ("" for other agents)
//	action     Action::"<catalog action>"
//	resource   Resource::"<resource path>"   {path, wildcard, head}, in
//	           Resource::"<p>/**" for each literal prefix p of its head
//	context    {task_id, user: User::"<issuer>#<sub>" (in
//	           Group::"<issuer>#<name>" for each of the user's groups, and in
//	           Group::"<name>" too when one user issuer is configured), risk,
//	           class, audience, environment, tool, dataset, time (a datetime),
//	           operation, dpop (a bool: the tokens are DPoP-bound)}
//
// Every context key is always present ("" when unknown), so a policy never
// fails for a missing attribute; tool and dataset are "" when the request
// named none, and the user's groups are known from approval on.
func cedarRequest(r broker.PolicyRequest) (*lazyEntities, cedar.Request) {
	e := &lazyEntities{r: r,
		agent:    types.NewEntityUID(TypeAgent, types.String(r.Agent.String())),
		user:     types.NewEntityUID(TypeUser, types.String(r.User.String())),
		resource: types.NewEntityUID(TypeResource, types.String(r.Resource)),
	}
	action := types.NewEntityUID(TypeAction, types.String(r.Action))
	ctx := types.NewRecord(types.RecordMap{
		"task_id":     types.String(r.TaskID),
		"user":        e.user,
		"risk":        types.String(r.Risk),
		"class":       types.String(r.Class),
		"audience":    types.String(r.Audience),
		"environment": types.String(r.Environment),
		"tool":        types.String(r.Tool),
		"dataset":     types.String(r.Dataset),
		"time":        types.NewDatetime(r.Time),
		"operation":   types.String(r.Operation),
		"dpop":        types.Boolean(r.DPoP),
	})
	return e, cedar.Request{Principal: e.agent, Action: action, Resource: e.resource, Context: ctx}
}

// lazyEntities are the entities of one request (the agent, the user and
// the resource), each built the first time a policy asks for it: most
// policies read the context only, and building an entity (its attribute
// record is sorted and hashed) cost more than deciding. Groups, and the
// action, have neither attributes nor parents: they need no entity of
// their own; membership is the user's parents.
type lazyEntities struct {
	r                        broker.PolicyRequest
	agent, user, resource    types.EntityUID
	agentE, userE, resourceE *types.Entity
}

var _ types.EntityGetter = (*lazyEntities)(nil)

func (e *lazyEntities) Get(uid types.EntityUID) (types.Entity, bool) {
	switch uid {
	case e.agent:
		if e.agentE == nil {
			td, spath := spiffeParts(e.r.Agent)
			e.agentE = &types.Entity{UID: e.agent, Attributes: types.NewRecord(types.RecordMap{
				"issuer":       types.String(e.r.Agent.Issuer),
				"sub":          types.String(e.r.Agent.Subject),
				"trust_domain": types.String(td),
				"spiffe_path":  types.String(spath),
			})}
		}
		return *e.agentE, true
	case e.user:
		if e.userE == nil {
			groups := groupsOf(e.r)
			e.userE = &types.Entity{UID: e.user, Parents: types.NewEntityUIDSet(groups...),
				Attributes: types.NewRecord(types.RecordMap{
					"issuer": types.String(e.r.User.Issuer),
					"sub":    types.String(e.r.User.Subject),
				})}
		}
		return *e.userE, true
	case e.resource:
		if e.resourceE == nil {
			head, wildcard, parents := resourceShape(e.r.Resource)
			e.resourceE = &types.Entity{UID: e.resource, Parents: types.NewEntityUIDSet(parents...),
				Attributes: types.NewRecord(types.RecordMap{
					"path":     types.String(e.r.Resource),
					"wildcard": types.Boolean(wildcard),
					"head":     types.String(head),
				})}
		}
		return *e.resourceE, true
	}
	return types.Entity{}, false
}

// spiffeParts are the trust domain and path of an agent of a SPIFFE trust
// domain ("prod.example.org", "/ns/agents/sa/agent-7"), or "" and "".
func spiffeParts(a broker.Ref) (td, path string) {
	if !a.IsSPIFFE() {
		return "", ""
	}
	td = strings.TrimPrefix(a.Issuer, "spiffe://")
	return td, strings.TrimPrefix(a.Subject, a.Issuer)
}

// groupsOf are the Group entities the user of r is in. A group is named by
// the issuer that asserted it, as the user is: Group::"<issuer>#<name>".
// The bare Group::"<name>" is kept only while one user issuer is
// configured; with several it would let partner's "eng" pass for corp's,
// and config refuses policies that name one (Set.CheckGroups).
func groupsOf(r broker.PolicyRequest) []types.EntityUID {
	names := groupNames(r)
	out := make([]types.EntityUID, len(names))
	for i, g := range names {
		out[i] = types.NewEntityUID(TypeGroup, types.String(g))
	}
	return out
}

// groupNames are the names of the user's groups policies see, in either
// engine: "<issuer>#<name>" for each, and "<name>" too while one user
// issuer is configured.
func groupNames(r broker.PolicyRequest) []string {
	n := len(r.Groups)
	if !r.SeveralUserIssuers {
		n *= 2
	}
	out := make([]string, 0, n)
	for _, g := range r.Groups {
		out = append(out, r.User.Issuer+"#"+g)
		if !r.SeveralUserIssuers {
			out = append(out, g)
		}
	}
	return out
}

// resourceShape describes a resource path, which may be a pattern (a task's
// or a token's scope is one): head is its literal segments before the first
// wildcard ("acme" for "acme/*/x", the whole path when there is none,
// "" for "**"), wildcard whether it has one, and parents the
// Resource::"<p>/**" of every literal prefix p of head (for a concrete
// path, of every proper prefix), so that
// `resource in Resource::"acme/infra/**"` holds for what lies under
// acme/infra. A pattern broader than such a subtree is not "in" it: a rule
// that protects a path must also forbid wildcards whose head is that path
// or one of its ancestors (README, "Policies").
func resourceShape(path string) (head string, wildcard bool, parents []types.EntityUID) {
	head, wildcard, anc := shapeOf(path)
	parents = make([]types.EntityUID, len(anc))
	for i, a := range anc {
		parents[i] = types.NewEntityUID(TypeResource, types.String(a))
	}
	return head, wildcard, parents
}

// shapeOf is resourceShape in strings, for either engine: ancestors are
// "<p>/**" for each literal prefix p of head (of each proper prefix, for a
// concrete path).
func shapeOf(path string) (head string, wildcard bool, ancestors []string) {
	segs := strings.Split(path, "/")
	lit := segs
	for i, s := range segs {
		if s == "*" || s == "**" {
			lit, wildcard = segs[:i], true
			break
		}
	}
	head = strings.Join(lit, "/")
	n := len(lit)
	if !wildcard {
		n-- // a concrete path is under its ancestors, not under itself
	}
	for i := 1; i <= n; i++ {
		ancestors = append(ancestors, strings.Join(lit[:i], "/")+"/**")
	}
	return head, wildcard, ancestors
}
