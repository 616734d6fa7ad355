package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
)

// policyCase is one request of a cases file for `errand policy test`.
type policyCase struct {
	Name      string   `yaml:"name"`
	Agent     string   `yaml:"agent"` // <issuer>#<sub>
	User      string   `yaml:"user"`  // <issuer>#<sub>
	Groups    []string `yaml:"groups"`
	Operation string   `yaml:"operation"` // create, approve, mint (default), secret, evaluate
	Scope     string   `yaml:"scope"`     // action:resource
	Audience  string   `yaml:"audience"`
	Tool      string   `yaml:"tool"`
	Dataset   string   `yaml:"dataset"`
	TaskID    string   `yaml:"task_id"`
	Time      string   `yaml:"time"`   // RFC 3339; default now
	Expect    string   `yaml:"expect"` // allow, deny or step-up; optional
}

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work with policies (Cedar or Rego)",
	}
	var cfgPath string
	test := &cobra.Command{
		Use:   "test --config errand.yaml cases.yaml",
		Short: "Evaluate the requests of a cases file against the config's policies",
		Long: `Evaluates every case of cases.yaml against the policies (and schema) named by the
config, in its policy_engine (cedar or opa), with the config's catalog (class,
risk) and audiences (environment), and prints allow, deny or step-up with the
deciding policies. The cases file is the same for both engines. A case with
"expect" that decides otherwise fails the run (exit 1), for policy CI.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			return policyTest(cmd.OutOrStdout(), cfgPath, args[0])
		},
	}
	test.Flags().StringVar(&cfgPath, "config", "", "errand.yaml naming the policies")
	cmd.AddCommand(test)
	return cmd
}

func policyTest(out io.Writer, cfgPath, casesPath string) error {
	cfg, cat, err := config.LoadCatalog(cfgPath)
	if err != nil {
		return err
	}
	if len(cfg.Policies) == 0 {
		return errors.New("config: policies: none configured")
	}
	set, err := cfg.PolicySource().Load()
	if err == nil {
		err = cfg.PolicyCheck(cat)(set)
	}
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(casesPath)
	if err != nil {
		return err
	}
	var file struct {
		Cases []policyCase `yaml:"cases"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return fmt.Errorf("%s: %v", casesPath, err)
	}
	if len(file.Cases) == 0 {
		return fmt.Errorf("%s: no cases", casesPath)
	}
	failed := 0
	for i, c := range file.Cases {
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("case %d", i+1)
		}
		r, err := caseRequest(c, cat)
		if err != nil {
			return fmt.Errorf("%s: %s: %v", casesPath, name, err)
		}
		d := set.Decide(r)
		verdict := "    "
		switch c.Expect {
		case "":
		case d.Effect.String():
			verdict = "PASS"
		case "allow", "deny", "step-up":
			verdict = "FAIL"
			failed++
		default:
			return fmt.Errorf("%s: %s: expect is allow, deny or step-up, not %q", casesPath, name, c.Expect)
		}
		why := strings.Join(d.Policies, ", ")
		if why == "" && d.Effect == broker.EffectDeny {
			why = "no policy permits"
		}
		if len(d.Reasons) > 0 {
			why += ": " + strings.Join(d.Reasons, "; ")
		}
		line := fmt.Sprintf("%s %-7s %s (%s)", verdict, d.Effect, name, why)
		if verdict == "FAIL" {
			line += fmt.Sprintf(" — expected %s", c.Expect)
		}
		fmt.Fprintln(out, strings.TrimLeft(line, " "))
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d cases decided otherwise than expected", failed, len(file.Cases))
	}
	return nil
}

func caseRequest(c policyCase, cat *broker.Catalog) (broker.PolicyRequest, error) {
	ref := func(field, v string) (broker.Ref, error) {
		iss, sub, ok := strings.Cut(v, "#")
		if !ok || iss == "" || sub == "" {
			return broker.Ref{}, fmt.Errorf("%s must be <issuer>#<sub>, not %q", field, v)
		}
		return broker.Ref{Issuer: iss, Subject: sub}, nil
	}
	agent, err := ref("agent", c.Agent)
	if err != nil {
		return broker.PolicyRequest{}, err
	}
	user, err := ref("user", c.User)
	if err != nil {
		return broker.PolicyRequest{}, err
	}
	sc, err := broker.ParseScope(c.Scope)
	if err != nil {
		return broker.PolicyRequest{}, err
	}
	a, ok := cat.Action(sc.Action)
	if !ok {
		return broker.PolicyRequest{}, fmt.Errorf("action %q is not in the config's catalog", sc.Action)
	}
	var env string
	if c.Audience != "vault" {
		au, ok := cat.Audience(c.Audience)
		if !ok {
			return broker.PolicyRequest{}, fmt.Errorf("audience %q is not in the config", c.Audience)
		}
		env = au.Environment
	}
	op := c.Operation
	switch op {
	case "":
		op = broker.OpMint
	case broker.OpCreate, broker.OpApprove, broker.OpMint, broker.OpSecret, broker.OpEvaluate:
	default:
		return broker.PolicyRequest{}, fmt.Errorf("operation must be create, approve, mint, secret or evaluate, not %q", op)
	}
	at := time.Now().UTC()
	if c.Time != "" {
		if at, err = time.Parse(time.RFC3339, c.Time); err != nil {
			return broker.PolicyRequest{}, fmt.Errorf("time must be RFC 3339: %v", err)
		}
	}
	return broker.PolicyRequest{
		Operation: op, TaskID: c.TaskID, Agent: agent, User: user, Groups: c.Groups,
		Action: sc.Action, Resource: sc.ResourcePath(), Class: a.Class, Risk: a.Risk,
		Audience: c.Audience, Environment: env, Tool: c.Tool, Dataset: c.Dataset, Time: at,
	}, nil
}
