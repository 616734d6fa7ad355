// Package policy is Errand's request-time policy-as-code, in one of two
// engines: Cedar policies (github.com/cedar-policy/cedar-go) or Rego
// policies evaluated in process by Open Policy Agent
// (github.com/open-policy-agent/opa/v1/rego). Either decides on the action,
// resource, audience, environment, tool, dataset and risk of every task,
// approval, mint and AuthZEN evaluation. Policies add each organisation's
// rules on top of the invariants, which stay in package broker and which no
// policy can loosen: the broker asks only about requests the invariants
// already allow, and a policy can only answer deny or step-up to them.
//
// Outcomes, the same for both engines: deny when a forbid (Rego: a deny
// rule) matches or no permit (an allow rule) does (default deny); step-up
// when a permit matches and the only matching forbids carry the annotation
// @step_up("why") (Rego: step_up rules); allow otherwise. A rule that
// cannot be evaluated (a type error, a conflict, a timeout) denies: a
// broken rule never opens a door.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/errandhq/errand/broker"
)

// StepUpAnnotation marks a forbid policy whose match asks the user to
// approve the request instead of denying it.
const StepUpAnnotation = "step_up"

// The engines a Source may name.
const (
	EngineCedar = "cedar"
	EngineOPA   = "opa"
)

// Set is a loaded, validated set of policies of one engine. Decide is a
// pure function of its request (no I/O, the time is the request's) that
// explains itself; the Check methods refuse a set naming what policies are
// never shown (README, "Policies"), so that a rule never silently stops
// matching.
type Set interface {
	broker.Policy
	// Engine is EngineCedar or EngineOPA.
	Engine() string
	// Len is the number of rules that decide: Cedar policies, or Rego
	// allow, deny and step_up rules.
	Len() int
	// Files are the files the set was read from.
	Files() []string
	// CheckActions refuses a set that names an action for which known is
	// false.
	CheckActions(known func(string) bool) error
	// CheckGroups refuses a set that names a group policies are never
	// shown.
	CheckGroups(userIssuers []string) error
	// CheckLowerCaseResources refuses a set that names a resource with an
	// upper-case letter.
	CheckLowerCaseResources() error
}

var (
	_ Set = (*CedarSet)(nil)
	_ Set = (*RegoSet)(nil)
)

// Source names a set of policies: the engine and its files.
type Source struct {
	// Engine is EngineCedar (the default when empty) or EngineOPA.
	Engine string
	// Patterns are glob patterns of policy files: .cedar files for
	// Cedar, .rego files for OPA.
	Patterns []string
	// Schema is a Cedar schema the policies must validate against
	// (Cedar only; optional).
	Schema string
	// Data is a JSON file whose object Rego policies read under data
	// (OPA only; optional).
	Data string
	// Timeout is the time budget of one Rego decision (OPA only; default
	// DefaultTimeout). A decision that does not finish in time denies.
	Timeout time.Duration
}

// Load reads and validates the source's policies.
func (src Source) Load() (Set, error) {
	switch src.Engine {
	case "", EngineCedar:
		if src.Data != "" {
			return nil, errors.New("policy_data: Rego data, but the policy engine is cedar")
		}
		if err := extensions(src.Patterns, ".cedar", EngineCedar); err != nil {
			return nil, err
		}
		return Load(src.Patterns, src.Schema)
	case EngineOPA:
		if src.Schema != "" {
			return nil, errors.New("policy_schema: a Cedar schema, but the policy engine is opa (Rego is checked against Errand's own input schema)")
		}
		if err := extensions(src.Patterns, ".rego", EngineOPA); err != nil {
			return nil, err
		}
		return LoadRego(src.Patterns, src.Data, src.Timeout)
	}
	return nil, fmt.Errorf("policy_engine: cedar or opa, not %q", src.Engine)
}

// extensions refuses a pattern for another engine's files, so that a
// config switched from one engine to the other without its policies fails
// with a reason rather than with a parse error.
func extensions(patterns []string, ext, engine string) error {
	for _, p := range patterns {
		for _, other := range []string{".cedar", ".rego"} {
			if other != ext && strings.HasSuffix(p, other) {
				return fmt.Errorf("policies: %q names %s files, but the policy engine is %s (policy_engine)", p, other, engine)
			}
		}
	}
	return nil
}

// globs expands the patterns, sorted and without repeats; a pattern
// matching nothing is an error: a typo must not silently drop a rule.
func globs(patterns []string) ([]string, error) {
	var files []string
	for _, p := range patterns {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("policies: %q: %v", p, err)
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("policies: %q matches no file", p)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	return dedupe(files), nil
}

// CedarSet is a loaded, validated set of Cedar policies, split by how
// they decide.
type CedarSet struct {
	permits cedar.PolicyMap // permit policies
	forbids cedar.PolicyMap // forbid policies without @step_up
	stepUps cedar.PolicyMap // forbid policies with @step_up
	reasons map[cedar.PolicyID]string
	files   []string
	count   int
}

// Engine is EngineCedar.
func (s *CedarSet) Engine() string { return EngineCedar }

// Len is the number of policies in the set.
func (s *CedarSet) Len() int { return s.count }

// Files are the files the set was read from.
func (s *CedarSet) Files() []string { return s.files }

// Load reads every file matched by the glob patterns (a pattern matching
// nothing is an error: a typo must not silently drop a rule), parses each
// as Cedar and, when schemaPath is set, validates every policy against that
// schema (Cedar schema syntax, or JSON when the name ends in .json). Errors
// name the file and line.
//
// A policy's id is its @id annotation or, without one, "<file>#<n>" with n
// counting the file's policies from 0. Ids must be unique across files.
func Load(patterns []string, schemaPath string) (*CedarSet, error) {
	files, err := globs(patterns)
	if err != nil {
		return nil, err
	}
	var v *validate.Validator
	if schemaPath != "" {
		var err error
		if v, err = loadSchema(schemaPath); err != nil {
			return nil, err
		}
	}
	s := &CedarSet{
		permits: cedar.PolicyMap{}, forbids: cedar.PolicyMap{}, stepUps: cedar.PolicyMap{},
		reasons: map[cedar.PolicyID]string{}, files: files,
	}
	seen := map[cedar.PolicyID]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policies: %v", err)
		}
		list, err := cedar.NewPolicyListFromBytes(f, raw)
		if err != nil {
			return nil, fmt.Errorf("policies: %s", parseError(f, err))
		}
		for i, p := range list {
			pos := p.Position()
			at := fmt.Sprintf("%s:%d", f, pos.Line)
			ann := p.Annotations()
			id := cedar.PolicyID(fmt.Sprintf("%s#%d", filepath.Base(f), i))
			if v, ok := ann["id"]; ok {
				if strings.TrimSpace(string(v)) == "" {
					return nil, fmt.Errorf("policies: %s: @id is empty", at)
				}
				id = cedar.PolicyID(v)
			}
			if prev, dup := seen[id]; dup {
				return nil, fmt.Errorf("policies: %s: policy id %q is already used at %s", at, id, prev)
			}
			seen[id] = at
			if v != nil {
				if err := v.Policy(string(id), (*xast.Policy)(p.AST())); err != nil {
					return nil, fmt.Errorf("policies: %s: policy %q does not match the schema: %v", at, id, oneLine(err))
				}
			}
			reason, step := ann[StepUpAnnotation]
			switch {
			case step && p.Effect() == cedar.Permit:
				return nil, fmt.Errorf("policies: %s: @step_up belongs on a forbid policy, not a permit", at)
			case step && strings.TrimSpace(string(reason)) == "":
				return nil, fmt.Errorf("policies: %s: @step_up needs a reason the user is shown", at)
			case step:
				s.stepUps[id] = p
				s.reasons[id] = string(reason)
			case p.Effect() == cedar.Permit:
				s.permits[id] = p
			default:
				s.forbids[id] = p
			}
			s.count++
		}
	}
	return s, nil
}

func loadSchema(path string) (*validate.Validator, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy_schema: %v", err)
	}
	var sc schema.Schema
	sc.SetFilename(path)
	if strings.HasSuffix(path, ".json") {
		err = sc.UnmarshalJSON(raw)
	} else {
		err = sc.UnmarshalCedar(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("policy_schema: %s: %v", path, oneLine(err))
	}
	res, err := sc.Resolve()
	if err != nil {
		return nil, fmt.Errorf("policy_schema: %s: %v", path, oneLine(err))
	}
	return validate.New(res), nil
}

var parsePos = regexp.MustCompile(`\s*at <input>:(\d+):(\d+)`)

// parseError puts the file, line and column of a syntax error first, as
// compilers do: "policies/a.cedar:4:35: parse error ...".
func parseError(file string, err error) string {
	msg := oneLine(err)
	if m := parsePos.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s:%s: %s", file, m[1], m[2], strings.TrimSpace(parsePos.ReplaceAllString(msg, "")))
	}
	return file + ": " + msg
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func dedupe(sorted []string) []string {
	out := sorted[:0]
	for i, f := range sorted {
		if i == 0 || f != sorted[i-1] {
			out = append(out, f)
		}
	}
	return out
}

// CheckActions refuses a set whose policies name an action for which
// known is false: without a schema, a misspelt Action::"…" would silently
// never match, and a forbid on it would never forbid.
func (s *CedarSet) CheckActions(known func(string) bool) error {
	return s.checkRefs(TypeAction, unknownAction(known))
}

func unknownAction(known func(string) bool) func(string) string {
	return func(a string) string {
		if known(a) {
			return ""
		}
		return "which is not in the catalog (actions are lower case)"
	}
}

// CheckGroups refuses a set that names a group policies are never shown,
// so that a rule on a group can never silently stop matching:
// Group::"<issuer>#<name>" must name one of userIssuers, and a bare
// Group::"<name>" is refused when there are several of them, since any of
// them could assert that name (partner's "eng" is not corp's).
func (s *CedarSet) CheckGroups(userIssuers []string) error {
	return s.checkRefs(TypeGroup, unshownGroup(userIssuers, `Group::`))
}

// unshownGroup says why policies are never shown the group g, or "";
// prefix is how the engine's language writes a group (Group:: in Cedar).
func unshownGroup(userIssuers []string, prefix string) func(string) string {
	return func(g string) string {
		if iss, _, ok := strings.Cut(g, "#"); ok && strings.Contains(iss, "://") {
			for _, u := range userIssuers {
				if u == iss {
					return ""
				}
			}
			return "and " + iss + " is not a configured issuer of kind user"
		}
		if len(userIssuers) > 1 {
			return `without its issuer, while several user issuers are configured: write ` + prefix + `"<issuer URL>#` + g + `"`
		}
		return ""
	}
}

// CheckLowerCaseResources refuses a set that names a Resource with an
// upper-case letter: when an audience compares resources
// case-insensitively, policies are shown its resources in lower case
// only, and a rule on Resource::"acme/Infra/**" would never match.
func (s *CedarSet) CheckLowerCaseResources() error {
	return s.checkRefs(TypeResource, upperCaseResource)
}

func upperCaseResource(r string) string {
	if strings.ToLower(r) != r {
		return "with upper-case letters, while an audience compares resources case-insensitively (policies see them in lower case): write it in lower case"
	}
	return ""
}

// checkRefs calls bad on the id of every entity reference of type typ in
// the set's policies, and returns the first complaint, naming the file,
// line and policy.
func (s *CedarSet) checkRefs(typ types.EntityType, bad func(id string) string) error {
	for _, m := range []cedar.PolicyMap{s.permits, s.forbids, s.stepUps} {
		for _, id := range sortedIDs(m) {
			p := m[id]
			raw, err := p.MarshalJSON()
			if err != nil {
				return fmt.Errorf("policies: %s: %v", id, err)
			}
			var doc any
			if err := json.Unmarshal(raw, &doc); err != nil {
				return fmt.Errorf("policies: %s: %v", id, err)
			}
			for _, ref := range entityRefs(doc, typ, nil) {
				if why := bad(ref); why != "" {
					pos := p.Position()
					return fmt.Errorf("policies: %s:%d: policy %q names %s::%q, %s", pos.Filename, pos.Line, id, typ, ref, why)
				}
			}
		}
	}
	return nil
}

func sortedIDs(m cedar.PolicyMap) []cedar.PolicyID {
	out := make([]cedar.PolicyID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// entityRefs collects the ids of every {"type": typ, "id": …} entity
// reference in a policy's JSON form.
func entityRefs(v any, typ types.EntityType, out []string) []string {
	switch x := v.(type) {
	case map[string]any:
		if x["type"] == string(typ) {
			if id, ok := x["id"].(string); ok {
				out = append(out, id)
			}
		}
		for _, c := range x {
			out = entityRefs(c, typ, out)
		}
	case []any:
		for _, c := range x {
			out = entityRefs(c, typ, out)
		}
	}
	return out
}

// Decide evaluates the set on r.
func (s *CedarSet) Decide(r broker.PolicyRequest) broker.PolicyDecision {
	entities, req := cedarRequest(r)
	// Permits and the plain forbids decide as Cedar does, except that a
	// forbid which fails to evaluate denies.
	dec, diag := cedar.Authorize(joined{s.permits, s.forbids}, entities, req)
	var broken []string
	for _, e := range diag.Errors {
		if _, forbid := s.forbids[e.PolicyID]; forbid {
			broken = append(broken, string(e.PolicyID))
		}
	}
	if len(broken) > 0 {
		return broker.PolicyDecision{Effect: broker.EffectDeny, Policies: broken,
			Reasons: []string{"a forbid policy could not be evaluated, which denies"}}
	}
	if dec != cedar.Allow {
		out := broker.PolicyDecision{Effect: broker.EffectDeny}
		for _, rs := range diag.Reasons {
			out.Policies = append(out.Policies, string(rs.PolicyID))
		}
		sort.Strings(out.Policies)
		return out
	}
	if len(s.stepUps) == 0 {
		return broker.PolicyDecision{Effect: broker.EffectAllow, Policies: ids(diag.Reasons)}
	}
	_, sdiag := cedar.Authorize(s.stepUps, entities, req)
	if len(sdiag.Errors) > 0 {
		var ps []string
		for _, e := range sdiag.Errors {
			ps = append(ps, string(e.PolicyID))
		}
		sort.Strings(ps)
		return broker.PolicyDecision{Effect: broker.EffectDeny, Policies: ps,
			Reasons: []string{"a step-up policy could not be evaluated, which denies"}}
	}
	if len(sdiag.Reasons) == 0 {
		return broker.PolicyDecision{Effect: broker.EffectAllow, Policies: ids(diag.Reasons)}
	}
	out := broker.PolicyDecision{Effect: broker.EffectStepUp, Policies: ids(sdiag.Reasons)}
	for _, id := range out.Policies {
		out.Reasons = append(out.Reasons, s.reasons[cedar.PolicyID(id)])
	}
	return out
}

func ids(rs []cedar.DiagnosticReason) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.PolicyID)
	}
	sort.Strings(out)
	return out
}

// joined iterates over several policy maps as one set.
type joined []cedar.PolicyMap

func (j joined) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, m := range j {
			for id, p := range m {
				if !yield(id, p) {
					return
				}
			}
		}
	}
}

// Engine holds the live set; Reload swaps it atomically, so decisions in
// flight finish on the set they started with. Either engine's set is held
// the same way: the broker sees only broker.Policy.
type Engine struct {
	src   Source
	check func(Set) error
	set   atomic.Pointer[setBox]
}

type setBox struct{ Set }

var _ broker.Policy = (*Engine)(nil)

// NewEngine loads the policies once; an error stops start-up. check, when
// not nil, vets every set loaded (see Set.CheckActions) at start and
// reload.
func NewEngine(src Source, check func(Set) error) (*Engine, error) {
	if len(src.Patterns) == 0 {
		return nil, errors.New("policies: no file given")
	}
	e := &Engine{src: src, check: check}
	s, err := e.load()
	if err != nil {
		return nil, err
	}
	e.set.Store(&setBox{s})
	return e, nil
}

func (e *Engine) load() (Set, error) {
	s, err := e.src.Load()
	if err != nil {
		return nil, err
	}
	if e.check != nil {
		if err := e.check(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Reload reads the files again (and prepares Rego again). On any error
// the running set stays and the error says why.
func (e *Engine) Reload() (Set, error) {
	s, err := e.load()
	if err != nil {
		return nil, err
	}
	e.set.Store(&setBox{s})
	return s, nil
}

// Current is the set in force.
func (e *Engine) Current() Set { return e.set.Load().Set }

// Decide evaluates the set in force.
func (e *Engine) Decide(r broker.PolicyRequest) broker.PolicyDecision {
	return e.set.Load().Decide(r)
}
