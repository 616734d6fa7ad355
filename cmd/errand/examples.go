package main

import "github.com/spf13/cobra"

// examples are the Example texts of the commands declared in files of
// their own (serve, dev, policy, config, db) and of the command groups;
// a command that sets its own Example keeps it.
var examples = map[string]string{
	"errand serve":   "  errand serve --config errand.yaml\n  errand serve --config errand.yaml --no-migrate   # after errand migrate, as the serving role",
	"errand migrate": "  errand migrate --config errand.yaml",
	"errand dev":     "  errand dev\n  errand dev --db :memory: --policies 'policies/*.cedar'",
	"errand dev token": `  AGENT=$(errand dev token --kind agent --sub agent-1)
  ALICE=$(errand dev token --kind user --sub alice --group eng)
  RS=$(errand dev token --kind resource --sub api-gateway)`,
	"errand policy":       "  errand policy test --config errand.yaml cases.yaml",
	"errand policy test":  "  errand policy test --config errand.yaml cases.yaml",
	"errand config":       "  errand config check --config errand.yaml",
	"errand config check": "  errand config check --config errand.yaml\n  errand config check -q --config errand.yaml && echo valid",
	"errand db":           "  errand db roles --config errand.yaml",
	"errand db roles":     "  errand db roles --config errand.yaml --app-role errand_app --auditor-role errand_auditor",
	"errand task":         "  errand task list --status pending\n  errand task approve tsk_… --scope github.repo.read:acme/api\n  errand task wait tsk_… --timeout 10m",
	"errand token":        "  errand token mint tsk_… -q --scope github.repo.read:acme/api --audience https://api.github.com\n  errand token revoke \"$AT\"",
	"errand audit":        "  errand audit events --task tsk_… --all\n  errand audit verify --database-url \"$AUDITOR_DB_URL\"",
	"errand approval":     "  errand approval list --status pending\n  errand approval approve apr_…",
}

func addExamples(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			c.Example = examples[c.CommandPath()]
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
