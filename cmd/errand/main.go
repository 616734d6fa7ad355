// Command errand is the Errand credential broker and its client:
// `errand dev` runs everything in one process for development, `errand
// serve` runs it in production, `errand migrate` applies the schema, and
// `errand task|token|audit` call a running server.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "errand:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "errand",
		Short:         "Errand: just-in-time, task-scoped credentials for AI agents",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := &globals{}
	g.register(root)
	root.AddCommand(newServe(), newMigrate(), newDev(g), newTaskCmd(g), newTokenCmd(g), newAuditCmd(g), newApprovalCmd(g), newDecideCmd(g), newDBCmd(), newPolicyCmd())
	return root
}
