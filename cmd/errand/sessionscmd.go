package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
)

// newSessionsCmd is the operator's end of people's browser sessions:
// `errand sessions revoke ISSUER#SUB` signs a person out everywhere at
// once (someone suspended or removed at the identity provider, a lost
// laptop), on every replica, since sessions live in the database.
func newSessionsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "End people's browser sessions (sign-in to the pages)"}
	var cfgPath string
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "", "errand.yaml")
	cmd.Example = "  errand sessions revoke --config errand.yaml https://login.example.com#alice"
	revoke := &cobra.Command{
		Use:     "revoke ISSUER#SUB",
		Short:   "End every session of a person at once, on every replica",
		Example: "  errand sessions revoke --config errand.yaml https://login.example.com#alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return usageErrorf("--config is required")
			}
			i := strings.LastIndex(args[0], "#")
			if i <= 0 || i == len(args[0])-1 {
				return usageErrorf("%q: write the person as <issuer URL>#<sub>", args[0])
			}
			user := broker.Ref{Issuer: args[0][:i], Subject: args[0][i+1:]}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			known := false
			for _, u := range cfg.UserIssuers() {
				known = known || u == user.Issuer
			}
			if !known {
				return usageErrorf("%s is not a user issuer of %s", user.Issuer, cfgPath)
			}
			b, err := app.Open(cmd.Context(), cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer b.Close()
			n, err := b.SignIn.DeleteUserSessions(cmd.Context(), user)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Ended %d session(s) of %s\n", n, user)
			return nil
		},
	}
	cmd.AddCommand(revoke)
	return cmd
}
