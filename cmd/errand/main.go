// Command errand is the Errand credential broker and its client:
// `errand dev` runs everything in one process for development, `errand
// serve` runs it in production, `errand migrate` applies the schema, and
// `errand task|token|audit` call a running server.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/internal/version"
)

func main() {
	stop := profile()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	stop()
	os.Exit(code)
}

// profile writes a CPU profile to $ERRAND_CPUPROFILE, and a heap profile
// to $ERRAND_MEMPROFILE, over the process's life (for the load tool's
// runs; see docs/benchmarks.md).
func profile() func() {
	cpu, mem := os.Getenv("ERRAND_CPUPROFILE"), os.Getenv("ERRAND_MEMPROFILE")
	var f *os.File
	if cpu != "" {
		var err error
		if f, err = os.Create(cpu); err == nil && pprof.StartCPUProfile(f) != nil {
			f.Close()
			f = nil
		}
	}
	return func() {
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
		}
		if mem != "" {
			if m, err := os.Create(mem); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(m, 0)
				m.Close()
			}
		}
	}
}

// newRootWithGlobals is the errand command and the client flags its
// commands share.
func newRootWithGlobals() (*cobra.Command, *globals) {
	root := &cobra.Command{
		Use:   "errand",
		Short: "Errand: just-in-time, task-scoped credentials for AI agents",
		Long: `Errand: just-in-time, task-scoped credentials for AI agents.

` + exitCodesHelp,
		Example: `  errand dev                                   # everything in one process, for trying it
  export ERRAND_TOKEN=$(errand dev token --kind user --sub alice --group eng)
  errand task list --status pending -o json`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := &globals{}
	g.register(root)
	root.PersistentPreRunE = g.checkOutput
	root.Version = version.Get().String()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newVersion(g), newServe(), newMigrate(), newDev(g), newTaskCmd(g), newTokenCmd(g), newLoginCmd(g), newLogoutCmd(g), newSessionsCmd(), newAuditCmd(g),
		newApprovalCmd(g), newDecideCmd(g), newDBCmd(), newPolicyCmd(), newKeysCmd(g), newConfigCmd(),
		newAgentCmd(g), newSecretCmd(g), newRevocationsCmd(g), newHealthcheck())
	addExamples(root)
	markUsage(root)
	return root, g
}
