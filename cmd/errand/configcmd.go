package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/store/postgres"
)

// maskedSecret stands for system_secret in the effective config: a
// reference to the variable that overrides it, so that the printed config
// checks again wherever ERRAND_SYSTEM_SECRET is set.
const maskedSecret = "${ERRAND_SYSTEM_SECRET}"

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

// printEffective writes cfg as it runs: every default filled in (issuer
// algorithms and lifetimes, limits, keys), durations written as durations,
// relative paths made absolute, system_secret written as a reference to
// ERRAND_SYSTEM_SECRET and the database password masked. What it prints
// is itself a valid config.
func printEffective(w io.Writer, cfg *config.Config) error {
	c := *cfg
	if c.SystemSecret != "" {
		c.SystemSecret = maskedSecret
	}
	c.DatabaseURL = postgres.MaskURL(c.DatabaseURL)
	pats, schema := c.PolicyFiles()
	c.Policies = make([]string, len(pats))
	for i, p := range pats {
		c.Policies[i] = absPath(p)
	}
	c.PolicySchema = absPath(schema)
	c.PolicyData = absPath(c.PolicySource().Data)
	if c.TLS != nil {
		t := *c.TLS
		t.CertFile, t.KeyFile, t.ClientCAFile = absPath(t.CertFile), absPath(t.KeyFile), absPath(t.ClientCAFile)
		c.TLS = &t
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&c); err != nil {
		return err
	}
	return enc.Close()
}

// absPath makes a path absolute, leaving "" as it is.
func absPath(p string) string {
	if p == "" {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
