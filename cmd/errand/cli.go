package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/client"
)

func newTaskCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Ask for, approve, deny, read and close tasks"}
	var (
		c     client.CreateTask
		ttl   time.Duration
		quiet bool
	)
	create := &cobra.Command{
		Use: "create", Short: "Ask for a task (as an agent)", Args: cobra.NoArgs,
		Example: `  TASK=$(errand task create -q --token "$AGENT" --on-behalf-of alice --goal "fix the flaky test" \
    --scope "github.repo.read:acme/**" --audience https://api.github.com)`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.TTLSeconds = int64(ttl / time.Second)
			t, raw, err := g.client().CreateTask(cmd.Context(), c)
			if err != nil {
				return err
			}
			if quiet {
				fmt.Fprintln(cmd.OutOrStdout(), t.ID)
				return nil
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { printTask(w, t) })
			return nil
		},
	}
	create.Flags().StringVar(&c.OnBehalfOf, "on-behalf-of", "", "the user's sub (or <issuer>#<sub>)")
	create.Flags().StringVar(&c.Goal, "goal", "", "what the task is for, shown to the approver")
	create.Flags().StringArrayVar(&c.Scopes, "scope", nil, "a scope action[:resource] (repeat)")
	create.Flags().StringArrayVar(&c.Audiences, "audience", nil, "a resource server URL (repeat)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "task lifetime, e.g. 1h (default 1h, capped)")
	create.Flags().StringVar(&c.Tool, "tool", "", "tool the agent will use")
	create.Flags().StringVar(&c.Dataset, "dataset", "", "dataset the agent will touch")
	create.Flags().IntVar(&c.MaxCredentials, "max-credentials", 0, "budget: at most this many credentials (lowers the configured one)")
	create.Flags().IntVar(&c.MaxResources, "max-resources", 0, "budget: over at most this many distinct resources")
	create.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the task id")
	for _, f := range []string{"on-behalf-of", "goal", "scope", "audience"} {
		_ = create.MarkFlagRequired(f)
	}

	var (
		status string
		tp     paging
	)
	list := &cobra.Command{
		Use: "list", Short: "List your tasks (as a user: the tasks waiting for you)", Args: cobra.NoArgs,
		Example: `  errand task list --status pending
  errand task list --all -o json | jq -r '.tasks[].id'
  errand task list --limit 20 --cursor "$NEXT"`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			pg, err := g.list(cmd.Context(), "/v1/tasks", q, "tasks", "cursor", tp)
			if err != nil {
				return err
			}
			ts, err := decodeItems[client.Task](pg.items)
			if err != nil {
				return err
			}
			now := time.Now()
			g.emit(cmd.OutOrStdout(), pg.raw, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tSTATUS\tRISK\tAGENT\tON BEHALF OF\tSCOPES\tCREATED\tEXPIRES\tGOAL")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shown(t.ID), shown(t.Status), shown(t.Risk), shown(t.Agent),
						shown(t.OnBehalfOf), shown(strings.Join(t.Scopes, " ")), when(t.CreatedAt, now), when(t.ExpiresAt, now), goalCell(t.Goal))
				}
				moreNote(w, "cursor", pg.next)
			})
			return nil
		},
	}
	list.Flags().StringVar(&status, "status", "", "pending, approved, denied, closed or expired")
	_ = list.RegisterFlagCompletionFunc("status", cobra.FixedCompletions(taskStatuses, cobra.ShellCompDirectiveNoFileComp))
	tp.register(list)

	get := &cobra.Command{
		Use: "get TASK", Short: "Show a task", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, raw, err := g.client().GetTask(cmd.Context(), args[0])
			return g.taskResult(cmd, t, raw, err)
		},
	}

	var (
		a    client.Approve
		attl time.Duration
	)
	var yes bool
	approve := &cobra.Command{
		Use: "approve TASK", Short: "Approve a task, optionally narrower (as its user), after showing it", Args: cobra.ExactArgs(1),
		Long: `Approve shows the task first as the approval page does — what is decided (each
scope with its action's class, risk and description from the catalog, the
audiences, the expiry), then the agent's own words, quoted — and asks for
confirmation. The approval names the task's version and digest as shown: if
the task changed in between, Errand refuses it (task_changed) and nothing is
approved. Without a terminal to ask on, --yes is required (exit 2 otherwise).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			a.TTLSeconds = int64(attl / time.Second)
			return g.approveTask(cmd, args[0], a, yes)
		},
	}
	approve.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation (needed without a terminal)")
	approve.Flags().StringArrayVar(&a.Scopes, "scope", nil, "approve only these scopes (repeat; default as requested)")
	approve.Flags().StringArrayVar(&a.Audiences, "audience", nil, "approve only these audiences (repeat)")
	approve.Flags().DurationVar(&attl, "ttl", 0, "shorten the task's life, e.g. 30m")

	var reason string
	deny := &cobra.Command{
		Use: "deny TASK", Short: "Deny a task (as its user)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, raw, err := g.client().Deny(cmd.Context(), args[0], reason)
			return g.taskResult(cmd, t, raw, err)
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why")

	closeCmd := &cobra.Command{
		Use: "close TASK", Short: "Close a task and revoke everything issued for it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, raw, err := g.client().Close(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { printClosed(w, t) })
			return nil
		},
	}
	get.Example = `  errand task get "$TASK"`
	approve.Example = `  errand task approve "$TASK" --token "$ALICE"
  errand task approve "$TASK" --scope github.repo.read:acme/api --ttl 30m   # narrower`
	deny.Example = `  errand task deny "$TASK" --reason "not this week"`
	closeCmd.Example = `  errand task close "$TASK" --token "$AGENT"`
	cmd.AddCommand(create, list, get, approve, deny, closeCmd)
	taskExtras(g, cmd)
	for _, c := range cmd.Commands() {
		if c.Args != nil && c.Name() != "create" && c.Name() != "list" {
			c.ValidArgsFunction = g.completeTasks
		}
	}
	return cmd
}

func (g *globals) taskResult(cmd *cobra.Command, t client.Task, raw []byte, err error) error {
	if err != nil {
		return err
	}
	g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { printTask(w, t) })
	return nil
}

func orDash(ss []string) string {
	if len(ss) == 0 {
		return "-"
	}
	return strings.Join(ss, " ")
}

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Mint and introspect access tokens"}
	var (
		m     client.Mint
		ttl   time.Duration
		quiet bool
	)
	mint := &cobra.Command{
		Use: "mint TASK", Short: "Mint an access token for a task (as its agent)", Args: cobra.ExactArgs(1),
		Example:           `  AT=$(errand token mint "$TASK" -q --scope github.repo.read:acme/api --audience https://api.github.com)`,
		ValidArgsFunction: g.completeTasks,
		RunE: func(cmd *cobra.Command, args []string) error {
			m.TTLSeconds = int64(ttl / time.Second)
			tok, raw, err := g.client().Mint(cmd.Context(), args[0], m)
			if err != nil {
				return err
			}
			if quiet {
				fmt.Fprintln(cmd.OutOrStdout(), tok.AccessToken)
				return nil
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				fmt.Fprintf(w, "access_token\t%s\n", tok.AccessToken)
				fmt.Fprintf(w, "expires_in\t%ds\n", tok.ExpiresIn)
				fmt.Fprintf(w, "scope\t%s\n", tok.Scope)
				fmt.Fprintf(w, "audience\t%s\n", tok.Audience)
				fmt.Fprintf(w, "jti\t%s\n", tok.JTI)
			})
			return nil
		},
	}
	mint.Flags().StringArrayVar(&m.Scopes, "scope", nil, "a scope within the approval (repeat)")
	mint.Flags().StringVar(&m.Audience, "audience", "", "the resource server the token is for")
	mint.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (capped at 5m and the task's life)")
	mint.Flags().StringVar(&m.Tool, "tool", "", "tool the token is for")
	mint.Flags().StringVar(&m.Dataset, "dataset", "", "dataset the token is for")
	mint.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the access token")
	_ = mint.MarkFlagRequired("scope")
	_ = mint.MarkFlagRequired("audience")

	introspect := &cobra.Command{
		Use: "introspect ACCESS_TOKEN", Short: "Ask whether a token is active (as a resource server)", Args: cobra.ExactArgs(1),
		Example: `  errand token introspect "$AT" --token "$RS"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			in, raw, err := g.client().Introspect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				if in["active"] != true {
					fmt.Fprintln(w, "active\tfalse")
					return
				}
				act, _ := in["act"].(map[string]any)
				fmt.Fprintln(w, "active\ttrue")
				fmt.Fprintf(w, "sub\t%v\n", in["sub"])
				fmt.Fprintf(w, "act\t%v#%v\n", act["iss"], act["sub"])
				fmt.Fprintf(w, "scope\t%v\n", in["scope"])
				fmt.Fprintf(w, "aud\t%v\n", in["aud"])
				fmt.Fprintf(w, "task_id\t%v\n", in["task_id"])
				if exp, ok := in["exp"].(float64); ok {
					fmt.Fprintf(w, "exp\t%s\n", time.Unix(int64(exp), 0).UTC().Format(time.RFC3339))
				}
			})
			return nil
		},
	}
	cmd.AddCommand(mint, introspect, tokenRevoke(g))
	return cmd
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit trail and the issuance history (as an auditor)"}
	filters := func(c *cobra.Command) (*url.Values, *paging) {
		q := &url.Values{}
		for _, name := range []string{"task", "actor", "type", "since", "until"} {
			name := name
			c.Flags().Func(name, "filter: "+name, func(v string) error {
				key := name
				if key == "task" {
					key = "task_id"
				}
				q.Set(key, v)
				return nil
			})
		}
		_ = c.RegisterFlagCompletionFunc("task", g.completeTasks)
		p := &paging{}
		p.register(c)
		return q, p
	}
	events := &cobra.Command{
		Use: "events", Short: "List audit events", Args: cobra.NoArgs,
		Example: `  errand audit events --task tsk_… 
  errand audit events --type credential.issued --since 2026-12-01T00:00:00Z --all -o json`,
	}
	eq, ep := filters(events)
	events.RunE = func(cmd *cobra.Command, _ []string) error {
		pg, err := g.list(cmd.Context(), "/v1/audit/events", *eq, "events", "cursor", *ep)
		if err != nil {
			return err
		}
		evs, err := decodeItems[client.Event](pg.items)
		if err != nil {
			return err
		}
		now := time.Now()
		g.emit(cmd.OutOrStdout(), pg.raw, func(w io.Writer) {
			fmt.Fprintln(w, "SEQ\tTIME\tTYPE\tACTOR\tTASK\tDETAIL")
			for _, e := range evs {
				actor := e.Actor.Kind
				if e.Actor.Subject != "" {
					actor += ":" + e.Actor.Subject
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, when(e.Time, now), shown(e.Type), shown(actor), shown(orDash([]string{e.TaskID})), summary(e.Detail))
			}
			moreNote(w, "cursor", pg.next)
		})
		return nil
	}
	creds := &cobra.Command{
		Use: "credentials", Short: "List issued credentials", Args: cobra.NoArgs,
		Example: `  errand audit credentials --task tsk_…
  errand audit credentials --all -o yaml`,
	}
	cq, cp := filters(creds)
	creds.RunE = func(cmd *cobra.Command, _ []string) error {
		pg, err := g.list(cmd.Context(), "/v1/credentials", *cq, "credentials", "cursor", *cp)
		if err != nil {
			return err
		}
		cs, err := decodeItems[client.Credential](pg.items)
		if err != nil {
			return err
		}
		g.emit(cmd.OutOrStdout(), pg.raw, func(w io.Writer) { credentialTable(w, cs, time.Now()); moreNote(w, "cursor", pg.next) })
		return nil
	}
	cmd.AddCommand(events, creds)
	addAuditOps(cmd)
	return cmd
}

// credentialTable prints issuance records, one a row.
func credentialTable(w io.Writer, cs []client.Credential, now time.Time) {
	fmt.Fprintln(w, "JTI\tTASK\tON BEHALF OF\tSCOPES\tAUDIENCE\tISSUED\tEXPIRES\tREVOKED")
	for _, c := range cs {
		revoked := "-"
		if c.RevokedAt != nil {
			revoked = when(*c.RevokedAt, now)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shown(c.JTI), shown(c.TaskID), shown(c.OnBehalfOf),
			shown(strings.Join(c.Scopes, " ")), shown(c.Audience), when(c.IssuedAt, now), when(c.ExpiresAt, now), revoked)
	}
}

// summary renders an event's detail as compact key=value pairs.
func summary(raw json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	var parts []string
	for _, k := range []string{"code", "source", "count", "detail", "scopes", "approved_scopes", "audience", "revoked", "reason"} {
		if v, ok := m[k]; ok && v != "" {
			if l, ok := v.([]any); ok {
				s := make([]string, len(l))
				for i, x := range l {
					s[i] = fmt.Sprint(x)
				}
				v = strings.Join(s, ",")
			}
			parts = append(parts, k+"="+shown(fmt.Sprint(v)))
		}
	}
	return strings.Join(parts, " ")
}
