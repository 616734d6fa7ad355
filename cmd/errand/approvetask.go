package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/client"
)

// approveTask is errand task approve: it reads the task, shows it as the
// approval page does (what is decided first, the agent's words quoted
// after) on stderr, asks for confirmation unless yes, and approves the
// version and digest it showed, so that a task changed in between is
// refused (task_changed) rather than approved unseen.
func (g *globals) approveTask(cmd *cobra.Command, id string, a client.Approve, yes bool) error {
	if !yes && !stdinIsTerminal(cmd.InOrStdin()) {
		return usageErrorf("refusing to approve without confirmation: no terminal to ask on; read the task with errand task get, then pass --yes")
	}
	c := g.client()
	t, _, err := c.GetTask(cmd.Context(), id)
	if err != nil {
		return err
	}
	if !yes {
		tw := tabwriter.NewWriter(cmd.ErrOrStderr(), 0, 4, 2, ' ', 0)
		printTask(tw, t)
		tw.Flush()
		if err := confirm(cmd, false, approvalQuestion(t, a)); err != nil {
			return err
		}
	}
	a.Version, a.Digest = t.Version, t.Digest
	done, raw, err := c.Approve(cmd.Context(), id, a)
	return g.taskResult(cmd, done, raw, err)
}

// approvalQuestion says what the confirmation approves: the scopes and
// audiences as asked, or the narrower ones of --scope and --audience.
func approvalQuestion(t client.Task, a client.Approve) string {
	scopes, auds := t.Scopes, t.Audiences
	how := "as asked"
	if a.Scopes != nil || a.Audiences != nil || a.TTLSeconds > 0 {
		how = "narrowed"
		if a.Scopes != nil {
			scopes = a.Scopes
		}
		if a.Audiences != nil {
			auds = a.Audiences
		}
	}
	q := fmt.Sprintf("Approve task %s for agent %s, %s: %s for %s", shown(t.ID), shown(t.Agent), how,
		shown(strings.Join(scopes, " ")), shown(strings.Join(auds, " ")))
	if a.TTLSeconds > 0 {
		q += fmt.Sprintf(", for at most %ds", a.TTLSeconds)
	}
	return q + "?"
}
