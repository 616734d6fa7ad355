package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/client"
)

func newApprovalCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approval",
		Short: "List, read, approve and deny step-up approvals",
		Long: `A @step_up policy lets a mint (or a secret) of an approved task through only once
its user approves that exact request: the agent's call is refused with
approval_required and an approval id (apr_...), the user approves or denies it
here, and the agent repeats the same call, which then succeeds once.`,
	}

	var (
		status string
		ap     paging
	)
	list := &cobra.Command{
		Use: "list", Short: "List your step-up approvals (as a user: those waiting for you)", Args: cobra.NoArgs,
		Example: `  errand approval list --status pending
  errand approval list --all -o json | jq -r '.approvals[].id'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			pg, err := g.list(cmd.Context(), "/v1/approvals", q, "approvals", "cursor", ap)
			if err != nil {
				return err
			}
			as, err := decodeItems[client.Approval](pg.items)
			if err != nil {
				return err
			}
			if g.machine() {
				g.emit(cmd.OutOrStdout(), pg.raw, nil)
				return nil
			}
			goals := g.taskGoals(cmd.Context(), as)
			now := time.Now()
			g.emit(cmd.OutOrStdout(), pg.raw, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tSTATUS\tTASK\tAGENT\tON BEHALF OF\tSCOPES\tAUDIENCE\tREASONS\tCREATED\tEXPIRES\tGOAL")
				for _, a := range as {
					goal, ok := goals[a.TaskID]
					cell := "-"
					if ok {
						cell = goalCell(goal)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shown(a.ID), shown(a.Status), shown(a.TaskID),
						shown(a.Agent), shown(a.OnBehalfOf), shown(strings.Join(a.Scopes, " ")), shown(a.Audience),
						shown(reasons(a)), when(a.CreatedAt, now), when(a.ExpiresAt, now), cell)
				}
				moreNote(w, "cursor", pg.next)
			})
			return nil
		},
	}
	list.Flags().StringVar(&status, "status", "", "pending, approved, denied, used or expired")
	_ = list.RegisterFlagCompletionFunc("status", cobra.FixedCompletions(approvalStatuses, cobra.ShellCompDirectiveNoFileComp))
	ap.register(list)

	get := &cobra.Command{
		Use: "get APPROVAL", Short: "Show a step-up approval", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, raw, err := g.client().GetApproval(cmd.Context(), args[0])
			return g.approvalResult(cmd, a, raw, err)
		},
	}
	approve := &cobra.Command{
		Use: "approve APPROVAL", Short: "Approve a step-up approval (as the task's user)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, raw, err := g.client().ApproveApproval(cmd.Context(), args[0])
			return g.approvalResult(cmd, a, raw, err)
		},
	}
	var reason string
	deny := &cobra.Command{
		Use: "deny APPROVAL", Short: "Deny a step-up approval (as the task's user)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, raw, err := g.client().DenyApproval(cmd.Context(), args[0], reason)
			return g.approvalResult(cmd, a, raw, err)
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why")
	get.Example = "  errand approval get apr_…"
	approve.Example = "  errand approval approve apr_…   # then the agent repeats its call, which succeeds once"
	deny.Example = `  errand approval deny apr_… --reason "not this repository"`
	var timeout, interval time.Duration
	wait := &cobra.Command{
		Use:   "wait APPROVAL",
		Short: "Wait until a step-up approval is decided: exit 0 approved, 4 denied or expired, 5 still pending at --timeout",
		Long: `errand approval wait polls the approval until it leaves pending, then prints it: the
agent's way to wait for its user after a call refused with approval_required (exit 5),
before repeating that call. It exits 0 when the approval is approved (or already used),
4 when denied or expired, and 5 when --timeout passes with it still pending.`,
		Example: `  if ! errand token mint "$TASK" -q --scope github.pr.write:acme/api --audience https://api.github.com -o json >out.json; then
    errand approval wait "$(jq -r .approval_id out.json)" --timeout 15m
  fi`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			return waitUntil(cmd.Context(), timeout, interval, "approval "+shown(args[0]), func(ctx context.Context) (bool, error) {
				a, raw, err := c.GetApproval(ctx, args[0])
				if err != nil || a.Status == "pending" {
					return false, err
				}
				g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { printApproval(w, a) })
				if a.Status == "approved" || a.Status == "used" {
					return true, nil
				}
				return true, refusedError{msg: "approval " + shown(a.ID) + " is " + shown(a.Status), reported: true}
			})
		},
	}
	wait.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, exit 5 (default: wait until decided)")
	wait.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to ask")
	for _, c := range []*cobra.Command{get, approve, deny, wait} {
		c.ValidArgsFunction = g.completeApprovals
	}
	cmd.AddCommand(list, get, approve, deny, wait)
	return cmd
}

// taskGoals reads the goal of each task the approvals belong to, for the
// GOAL column; a task the caller cannot read is left out.
func (g *globals) taskGoals(ctx context.Context, as []client.Approval) map[string]string {
	goals := map[string]string{}
	c := g.client()
	for _, a := range as {
		if _, done := goals[a.TaskID]; done {
			continue
		}
		if t, _, err := c.GetTask(ctx, a.TaskID); err == nil {
			goals[a.TaskID] = t.Goal
		}
	}
	return goals
}

func (g *globals) approvalResult(cmd *cobra.Command, a client.Approval, raw []byte, err error) error {
	if err != nil {
		return err
	}
	g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { printApproval(w, a) })
	return nil
}

func reasons(a client.Approval) string {
	if len(a.Reasons) == 0 {
		return "-"
	}
	return strings.Join(a.Reasons, "; ")
}

func newDecideCmd(g *globals) *cobra.Command {
	var action, resType, resID, tool, dataset string
	cmd := &cobra.Command{
		Use:   "decide ACCESS_TOKEN",
		Short: "Ask whether a token allows an action on a resource (as a resource server, AuthZEN)",
		Long: `errand decide asks Errand's AuthZEN access evaluation endpoint whether the bearer
of ACCESS_TOKEN may do --action on --resource now: the token must be active and
its scope must cover action:resource, and the policies must allow it (or the
token must have been minted under a step-up approval). --token is your
resource server's identity token.

It prints the decision and the reason and exits 0 when allowed; when denied it
prints nothing and exits 4 (refused) with "deny: <reason>" (with -o json it
prints the answer first), so that scripts can test it directly.`,
		Example: `  errand decide "$AT" --token "$RS" --action github.pr.write --resource-type repository --resource acme/api`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, raw, err := g.client().Evaluate(cmd.Context(), args[0], action, resType, resID, tool, dataset)
			if err != nil {
				return err
			}
			if d.Allow || g.machine() {
				g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
					fmt.Fprintln(w, "decision\tallow")
					fmt.Fprintf(w, "reason\t%s\n", d.Reason)
					if len(d.Policies) > 0 {
						fmt.Fprintf(w, "policies\t%s\n", strings.Join(d.Policies, " "))
					}
				})
			}
			if !d.Allow {
				return refusedError{msg: "deny: " + d.Reason, reported: g.machine()}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&action, "action", "", "the action, e.g. github.pr.write")
	cmd.Flags().StringVar(&resType, "resource-type", "", "the resource's type, e.g. repository")
	cmd.Flags().StringVar(&resID, "resource", "", "the resource's path, e.g. acme/api")
	cmd.Flags().StringVar(&tool, "tool", "", "the tool the request comes through")
	cmd.Flags().StringVar(&dataset, "dataset", "", "the dataset the request touches")
	for _, f := range []string{"action", "resource-type", "resource"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}
