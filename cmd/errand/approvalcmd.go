package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

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

	var status, cursor string
	list := &cobra.Command{
		Use: "list", Short: "List your step-up approvals (as a user: those waiting for you)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			as, next, raw, err := g.client().ListApprovals(cmd.Context(), status, cursor)
			if err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tSTATUS\tTASK\tAGENT\tON BEHALF OF\tSCOPES\tAUDIENCE\tREASONS\tEXPIRES")
				for _, a := range as {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shown(a.ID), shown(a.Status), shown(a.TaskID),
						shown(a.Agent), shown(a.OnBehalfOf), shown(strings.Join(a.Scopes, " ")), shown(a.Audience),
						shown(reasons(a)), shown(a.ExpiresAt))
				}
				if next != "" {
					fmt.Fprintf(w, "more: --cursor %s\n", next)
				}
			})
			return nil
		},
	}
	list.Flags().StringVar(&status, "status", "", "pending, approved, denied, used or expired")
	list.Flags().StringVar(&cursor, "cursor", "", "the next page, as the previous one printed it")

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
	cmd.AddCommand(list, get, approve, deny)
	return cmd
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
prints nothing and exits 1 with "deny: <reason>" (with --json it prints the
answer first), so that scripts can test it directly.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, raw, err := g.client().Evaluate(cmd.Context(), args[0], action, resType, resID, tool, dataset)
			if err != nil {
				return err
			}
			if d.Allow || g.json {
				g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
					fmt.Fprintln(w, "decision\tallow")
					fmt.Fprintf(w, "reason\t%s\n", d.Reason)
					if len(d.Policies) > 0 {
						fmt.Fprintf(w, "policies\t%s\n", strings.Join(d.Policies, " "))
					}
				})
			}
			if !d.Allow {
				return errors.New("deny: " + d.Reason)
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
