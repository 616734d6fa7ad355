package policy

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/errandhq/errand/broker"
)

// DefaultTimeout is the time budget of one Rego decision when the source
// sets none. Errand's decisions take tens of microseconds of CPU; the
// budget is wall-clock time, waiting for a core included, so it stands far
// above that (100 ms denied a few decisions of a machine at a load of 14
// on two cores): what it stops is a policy looping over something it
// should not.
const DefaultTimeout = time.Second

// RegoPackage is the package whose rules decide: data.errand.
const RegoPackage = "errand"

// The rules of package errand that decide (README, "Policies"):
//
//	allow contains "<id>" if { … }          a permit, named <id>
//	deny contains "<id>" if { … }           a forbid
//	step_up["<id>"] := "<reason>" if { … }  a forbid that asks the user
//
// deny when deny is not empty (its ids decide) or allow is empty (default
// deny); step-up when allow is not empty, deny is, and step_up is not (its
// ids and reasons decide); allow otherwise (allow's ids decide).
const (
	ruleAllow  = "allow"
	ruleDeny   = "deny"
	ruleStepUp = "step_up"
)

// inputSchemaJSON is the JSON Schema of the input document Rego policies
// are given; policies are type-checked against it at load, so that a
// misspelt key (input.context.enviroment) refuses with its file and line.
//
//go:embed rego_input.schema.json
var inputSchemaJSON []byte

// ioBuiltins are the built-in functions a policy may not call: I/O, the
// clock and randomness. A decision is a pure function of its input (the
// time is input.context.time), the same on every replica and in
// `errand policy test`; calling one of these refuses at load.
var ioBuiltins = map[string]bool{
	"http.send": true, "net.lookup_ip_addr": true, "opa.runtime": true,
	"time.now_ns": true, "rand.intn": true, "uuid.rfc4122": true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// RegoSet is a loaded, compiled set of Rego policies, prepared once for
// evaluation; Reload prepares the files again.
type RegoSet struct {
	query   rego.PreparedEvalQuery
	modules map[string]*ast.Module
	rules   map[string]bool // which of allow, deny, step_up are defined
	timeout time.Duration
	files   []string
	count   int
}

// Engine is EngineOPA.
func (s *RegoSet) Engine() string { return EngineOPA }

// Len is the number of allow, deny and step_up rules.
func (s *RegoSet) Len() int { return s.count }

// Files are the .rego files (and the data file) the set was read from.
func (s *RegoSet) Files() []string { return s.files }

// LoadRego reads every .rego file matched by the patterns (Rego v1
// syntax), and dataPath's JSON object as data when set, and compiles them
// against Errand's input schema, without the built-ins of I/O, clock or
// randomness. It refuses, naming the file and line: a syntax, compile or
// type error (an unknown input key, an undefined function or rule), an
// allow, deny or step_up rule of another shape than the contract's, and a
// set that fails to evaluate a probe request (a conflict, a built-in error)
// or does not decide it within timeout. Nothing that refuses here is ever
// put in force.
func LoadRego(patterns []string, dataPath string, timeout time.Duration) (*RegoSet, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	files, err := globs(patterns)
	if err != nil {
		return nil, err
	}
	caps := ast.CapabilitiesForThisVersion()
	kept := caps.Builtins[:0:0]
	for _, b := range caps.Builtins {
		if !ioBuiltins[b.Name] {
			kept = append(kept, b)
		}
	}
	caps.Builtins = kept
	s := &RegoSet{modules: map[string]*ast.Module{}, rules: map[string]bool{}, timeout: timeout, files: files}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policies: %v", err)
		}
		m, err := ast.ParseModuleWithOpts(f, string(raw), ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps})
		if err != nil {
			return nil, fmt.Errorf("policies: %s", regoError(err))
		}
		s.modules[f] = m
	}
	if err := s.checkShapes(); err != nil {
		return nil, err
	}
	var schema any
	if err := json.Unmarshal(inputSchemaJSON, &schema); err != nil {
		return nil, fmt.Errorf("policies: the input schema: %v", err)
	}
	schemas := ast.NewSchemaSet()
	schemas.Put(ast.SchemaRootRef, schema)
	compiler := ast.NewCompiler().WithCapabilities(caps).WithSchemas(schemas)
	if compiler.Compile(s.modules); compiler.Failed() {
		return nil, fmt.Errorf("policies: %s", regoError(compiler.Errors))
	}
	data := map[string]any{}
	if dataPath != "" {
		if data, err = readData(dataPath); err != nil {
			return nil, err
		}
		s.files = append(s.files, dataPath)
	}
	var q []string
	for _, r := range []string{ruleAllow, ruleDeny, ruleStepUp} {
		if s.rules[r] {
			q = append(q, fmt.Sprintf("%s := data.%s.%s", r, RegoPackage, r))
		}
	}
	if len(q) == 0 {
		// Nothing decides: every request is denied (default deny), as a
		// Cedar set without a permit denies.
		q = []string{"true"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.query, err = rego.New(
		rego.Query(strings.Join(q, "; ")),
		rego.Compiler(compiler),
		rego.Store(inmem.NewFromObject(data)),
		rego.Capabilities(caps),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policies: %s", regoError(err))
	}
	// A probe: an error that any request meets (a conflict between
	// rules, a built-in failing on the data, a loop) refuses now rather
	// than denying every request later.
	if d := s.Decide(probeRequest()); d.Effect == broker.EffectDeny && len(d.Reasons) > 0 {
		at := ""
		if len(d.Policies) > 0 {
			at = d.Policies[0] + ": "
		}
		return nil, fmt.Errorf("policies: %sa probe request (a low-risk read, nothing in particular) does not evaluate: %s", at, strings.Join(d.Reasons, "; "))
	}
	return s, nil
}

// probeRequest is a mint of nothing in particular, for LoadRego.
func probeRequest() broker.PolicyRequest {
	return broker.PolicyRequest{Operation: broker.OpMint, Agent: broker.Ref{Issuer: "https://probe", Subject: "probe"},
		User: broker.Ref{Issuer: "https://probe", Subject: "probe"}, Action: "probe", Resource: "probe",
		Class: broker.ClassRead, Risk: broker.RiskLow, Time: time.Unix(0, 0).UTC()}
}

func readData(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy_data: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var data map[string]any
	if err := dec.Decode(&data); err != nil {
		return nil, fmt.Errorf("policy_data: %s: a JSON object: %v", path, err)
	}
	if data == nil {
		return nil, fmt.Errorf("policy_data: %s: a JSON object, not null", path)
	}
	if _, ok := data[RegoPackage]; ok {
		return nil, fmt.Errorf("policy_data: %s: the key %q is the policies' package; name the data otherwise", path, RegoPackage)
	}
	return data, nil
}

// checkShapes holds the rules of package errand to the contract: allow
// and deny are sets of ids (`contains`), step_up an object of id to
// reason. A boolean `allow if …`, the usual Rego shape, would otherwise
// be an error at every decision.
func (s *RegoSet) checkShapes() error {
	found := false
	root := ast.Ref{ast.DefaultRootDocument, ast.StringTerm(RegoPackage)}
	for _, f := range s.files {
		m := s.modules[f]
		if !m.Package.Path.Equal(root) {
			// A package inside a deciding rule (package errand.deny)
			// would add to it unseen, or be silently left out.
			p := m.Package.Path
			if len(p) > 2 && p.HasPrefix(root) {
				if name, ok := p[2].Value.(ast.String); ok && (name == ruleAllow || name == ruleDeny || name == ruleStepUp) {
					return fmt.Errorf("policies: %s:%d: package %s is inside the deciding rule %s; write its rules in package %s",
						f, m.Package.Location.Row, p, string(name), RegoPackage)
				}
			}
			continue
		}
		found = true
		for _, r := range m.Rules {
			ref := r.Head.Ref()
			name := ref[0].Value.String()
			at := fmt.Sprintf("%s:%d", f, r.Location.Row)
			var want string
			switch name {
			case ruleAllow, ruleDeny:
				if r.Default || r.Head.RuleKind() != ast.MultiValue || len(ref) != 1 {
					want = fmt.Sprintf(`a set of rule ids: %s contains "<id>" if { … }`, name)
				}
			case ruleStepUp:
				if r.Default || r.Head.RuleKind() != ast.SingleValue || len(ref) != 2 || r.Head.Value == nil {
					want = `an object of rule id to the reason the user is shown: step_up["<id>"] := "<why>" if { … }`
				}
			default:
				continue
			}
			if want != "" {
				return fmt.Errorf("policies: %s: rule %s of package %s must be %s", at, name, RegoPackage, want)
			}
			s.rules[name] = true
			s.count++
		}
	}
	if !found {
		return fmt.Errorf("policies: no file declares package %s, whose allow, deny and step_up rules decide", RegoPackage)
	}
	return nil
}

// regoError is an OPA error one problem a line, each starting with its
// file:line:column as compilers write it.
func regoError(err error) string {
	var errs ast.Errors
	if errors.As(err, &errs) {
		var out []string
		for _, e := range errs {
			out = append(out, astError(e))
		}
		return strings.Join(out, "\n")
	}
	var ae *ast.Error
	if errors.As(err, &ae) {
		return astError(ae)
	}
	var te *topdown.Error
	if errors.As(err, &te) {
		msg := te.Code + ": " + te.Message
		if te.Location != nil {
			return fmt.Sprintf("%s:%d:%d: %s", te.Location.File, te.Location.Row, te.Location.Col, msg)
		}
		return msg
	}
	return oneLine(err)
}

func astError(e *ast.Error) string {
	msg := e.Code + ": " + e.Message
	if e.Location != nil {
		return fmt.Sprintf("%s:%d:%d: %s", e.Location.File, e.Location.Row, e.Location.Col, msg)
	}
	return msg
}

// Decide evaluates the set on r within the set's time budget. An error
// (a conflict, a built-in error, the budget spent) or a result of another
// shape than the contract's denies, naming where and why.
func (s *RegoSet) Decide(r broker.PolicyRequest) broker.PolicyDecision {
	d, err := s.decide(r)
	if err != nil {
		out := broker.PolicyDecision{Effect: broker.EffectDeny}
		var te *topdown.Error
		switch {
		case errors.As(err, &te) && te.Code == topdown.CancelErr:
			out.Reasons = []string{fmt.Sprintf("the Rego policies did not decide within %s, which denies", s.timeout)}
		default:
			msg := oneLine(err)
			if errors.As(err, &te) {
				msg = te.Code + ": " + te.Message
				if te.Location != nil {
					// The file's name, not its path: the reason reaches
					// the agent in the refusal's detail.
					out.Policies = []string{fmt.Sprintf("%s:%d", filepath.Base(te.Location.File), te.Location.Row)}
				}
			}
			out.Reasons = []string{"the Rego policies could not be evaluated, which denies: " + oneLine(errors.New(msg))}
		}
		return out
	}
	return d
}

func (s *RegoSet) decide(r broker.PolicyRequest) (broker.PolicyDecision, error) {
	// The budget cancels the evaluation from a timer: cheaper than a
	// context with a deadline, which OPA watches from a goroutine of its
	// own per evaluation.
	c := topdown.NewCancel()
	timer := time.AfterFunc(s.timeout, c.Cancel)
	defer timer.Stop()
	rs, err := s.query.Eval(context.Background(), rego.EvalParsedInput(regoInput(r)), rego.EvalExternalCancel(c))
	if err != nil {
		return broker.PolicyDecision{}, err
	}
	deny := broker.PolicyDecision{Effect: broker.EffectDeny}
	if len(rs) != 1 {
		return deny, errors.New("the decision is undefined")
	}
	b := rs[0].Bindings
	allow, err := idSet(b, ruleAllow)
	if err != nil {
		return deny, err
	}
	forbid, err := idSet(b, ruleDeny)
	if err != nil {
		return deny, err
	}
	if len(forbid) > 0 {
		return broker.PolicyDecision{Effect: broker.EffectDeny, Policies: forbid}, nil
	}
	if len(allow) == 0 {
		return deny, nil // default deny
	}
	steps, _ := b[ruleStepUp].(map[string]any)
	if v, ok := b[ruleStepUp]; ok && steps == nil {
		return deny, fmt.Errorf("%s is %T, not an object of rule id to reason", ruleStepUp, v)
	}
	if len(steps) == 0 {
		return broker.PolicyDecision{Effect: broker.EffectAllow, Policies: allow}, nil
	}
	out := broker.PolicyDecision{Effect: broker.EffectStepUp}
	for id := range steps {
		out.Policies = append(out.Policies, id)
	}
	sort.Strings(out.Policies)
	for _, id := range out.Policies {
		why, ok := steps[id].(string)
		if !ok || strings.TrimSpace(why) == "" {
			return deny, fmt.Errorf("%s[%q] must be the reason the user is shown, a non-empty string", ruleStepUp, id)
		}
		out.Reasons = append(out.Reasons, why)
	}
	return out, nil
}

// idSet reads the set of rule ids bound to name (absent: empty), sorted.
func idSet(b rego.Vars, name string) ([]string, error) {
	v, ok := b[name]
	if !ok {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s is %T, not a set of rule ids", name, v)
	}
	out := make([]string, len(l))
	for i, x := range l {
		id, ok := x.(string)
		if !ok || id == "" {
			return nil, fmt.Errorf("%s holds %v, not a rule id (a non-empty string)", name, x)
		}
		out[i] = id
	}
	sort.Strings(out)
	return out, nil
}

// regoInput is the input document of one request (README, "Policies";
// rego_input.schema.json), as a lazy OPA object:
//
//	principal  {type: "agent", id: "<issuer>#<sub>", issuer, sub}
//	user       {id: "<issuer>#<sub>", issuer, sub, groups: ["<issuer>#<name>", …
//	           and "<name>" too while one user issuer is configured]}
//	action     "<catalog action>"
//	resource   {path, wildcard, head, ancestors: ["<p>/**" for each literal prefix p of head]}
//	context    {task_id, risk, class, audience, environment, tool, dataset,
//	           time (RFC 3339, UTC), operation, dpop}
//
// Every key is always present ("" when unknown), as in Cedar.
func regoInput(r broker.PolicyRequest) ast.Value {
	head, wildcard, ancestors := shapeOf(r.Resource)
	anc := make([]any, len(ancestors))
	for i, a := range ancestors {
		anc[i] = a
	}
	names := groupNames(r)
	groups := make([]any, len(names))
	for i, g := range names {
		groups[i] = g
	}
	// A lazy object: OPA converts a key to a value only when a rule
	// reads it, and most rules read a few keys of context.
	return ast.LazyObject(map[string]any{
		"principal": map[string]any{"type": "agent", "id": r.Agent.String(), "issuer": r.Agent.Issuer, "sub": r.Agent.Subject},
		"user":      map[string]any{"id": r.User.String(), "issuer": r.User.Issuer, "sub": r.User.Subject, "groups": groups},
		"action":    r.Action,
		"resource":  map[string]any{"path": r.Resource, "wildcard": wildcard, "head": head, "ancestors": anc},
		"context": map[string]any{
			"task_id": r.TaskID, "risk": string(r.Risk), "class": string(r.Class), "audience": r.Audience,
			"environment": r.Environment, "tool": r.Tool, "dataset": r.Dataset,
			"time": r.Time.UTC().Format(time.RFC3339Nano), "operation": r.Operation, "dpop": r.DPoP,
		},
	})
}
