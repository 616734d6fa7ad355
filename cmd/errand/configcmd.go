package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/store/postgres"
)

// Masked replaces a secret in the effective config.
const Masked = "[masked]"

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check a configuration"}
	var (
		cfgPath string
		quiet   bool
	)
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a config without starting: every problem at once, then the effective config with secrets masked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				lines := strings.Split(err.Error(), "\n")
				for _, l := range lines {
					fmt.Fprintln(cmd.OutOrStdout(), l)
				}
				return fmt.Errorf("%s: %d problem(s)", cfgPath, len(lines))
			}
			if quiet {
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# %s is valid; the effective configuration, secrets masked:\n", cfgPath)
			return printEffective(cmd.OutOrStdout(), cfg)
		},
	}
	check.Flags().StringVar(&cfgPath, "config", "", "errand.yaml")
	check.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the problems, not the effective config")
	cmd.AddCommand(check)
	return cmd
}

// printEffective writes cfg with defaults filled in, durations written as
// durations, and system_secret and the database password masked.
func printEffective(w io.Writer, cfg *config.Config) error {
	c := *cfg
	if c.SystemSecret != "" {
		c.SystemSecret = Masked
	}
	c.DatabaseURL = postgres.MaskURL(c.DatabaseURL)
	raw, err := yaml.Marshal(&c)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return err
	}
	m["limits"] = map[string]any{
		"token_ttl_max": c.Limits.TokenTTLMax.String(), "task_ttl_max": c.Limits.TaskTTLMax.String(),
		"pending_tasks_per_agent": c.Limits.PendingTasksPerAgent, "principal_rps": c.Limits.PrincipalRPS,
		"address_rps": c.Limits.AddressRPS, "credentials_per_task": c.Limits.CredentialsPerTask,
		"resources_per_task": c.Limits.ResourcesPerTask, "step_up_ttl": c.Limits.StepUpTTL.String(),
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(m); err != nil {
		return err
	}
	return enc.Close()
}
