package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/issuer/jwt"
)

// newKeysCmd is `errand keys list|rotate|retire`: the signing keys, read
// and changed in the database directly (with system_secret, to seal a new
// key), audited as the operator who ran it. Running replicas pick the
// change up within app.KeyReloadEvery.
func newKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "List, rotate and retire the token-signing keys"}
	var (
		cfgPath string
		force   bool
		yes     bool
	)
	cmd.Example = `  errand keys list --config errand.yaml
  errand keys rotate --config errand.yaml
  errand keys retire KID --config errand.yaml --yes   # a key believed compromised`
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "", "errand.yaml")
	open := func(ctx context.Context) (*config.Config, *app.Backend, *jwt.Issuer, error) {
		if cfgPath == "" {
			return nil, nil, nil, errors.New("--config is required")
		}
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return nil, nil, nil, err
		}
		st, err := app.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, nil, nil, err
		}
		// Offline: a stored set with a refused key stops serve, and must
		// still be listed and its refused key retired here.
		iss, err := jwt.NewOffline(jwt.Config{Issuer: cfg.PublicURL, Keys: st.Keys, Secret: []byte(cfg.SystemSecret), Alg: cfg.SigningAlg})
		if err != nil {
			st.Close()
			return nil, nil, nil, err
		}
		return cfg, st, iss, nil
	}
	list := &cobra.Command{
		Use: "list", Short: "List the signing keys and their states", Args: cobra.NoArgs,
		Example: "  errand keys list --config errand.yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, st, iss, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			keys, err := st.Keys.SigningKeys(cmd.Context())
			if err != nil {
				return err
			}
			g.printKeys(cmd.OutOrStdout(), keys, iss, false)
			return nil
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate now: next signs, current keeps verifying for the overlap, a new next is published",
		Example: `  errand keys rotate --config errand.yaml
  errand keys rotate --force --yes --config errand.yaml   # now, though the next key is fresh`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if force {
				if err := confirm(cmd, yes, "Rotate now, though caches may not have the next key yet (tokens it signs may fail to verify for a few minutes)?"); err != nil {
					return err
				}
			}
			cfg, st, iss, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			c, err := iss.Rotate(cmd.Context(), cfg.KeyPolicy(), operator(), force)
			if err != nil {
				return err
			}
			return g.reportChange(cmd.OutOrStdout(), st, iss, c)
		},
	}
	retire := &cobra.Command{
		Use:     "retire KID",
		Short:   "Retire a key at once (believed compromised): tokens it signed stop verifying",
		Example: "  errand keys retire KID --config errand.yaml\n  errand keys retire --config errand.yaml -- -G9NaS6fh14PUJ4s9Vx0bIHSpQjN5i2RZFOuQvkB2GU   # a key id beginning with '-'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, yes, "Retire key "+shown(args[0])+" now? Every token it signed stops verifying."); err != nil {
				return err
			}
			_, st, iss, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer st.Close()
			c, err := iss.Retire(cmd.Context(), args[0], operator())
			if err != nil {
				return err
			}
			return g.reportChange(cmd.OutOrStdout(), st, iss, c)
		},
	}
	retire.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation (needed without a terminal)")
	// A key id is a base64url thumbprint, and one in 64 begins with '-',
	// which reads as a flag: say how to pass it rather than "unknown flag".
	retire.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if kid := kidAmongFlags(strings.Fields(err.Error())); kid != "" {
			return usageErrorf("%v: a key id that begins with '-' goes after '--': errand keys retire [flags] -- %s", err, kid)
		}
		return usageErrorf("%v", err)
	})
	rotate.Flags().BoolVarP(&yes, "yes", "y", false, "with --force: do not ask for confirmation (needed without a terminal)")
	rotate.Flags().BoolVar(&force, "force", false, "rotate even if the next key was published less than 5.5 min ago (a key believed compromised)")
	cmd.AddCommand(list, rotate, retire)
	return cmd
}

// kidAmongFlags is the word of a flag error that looks like a key id (an
// RFC 7638 SHA-256 thumbprint: 43 base64url characters) beginning with
// '-', or "".
func kidAmongFlags(args []string) string {
	for _, a := range args {
		if len(a) == 43 && a[0] == '-' && strings.Trim(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == "" {
			return a
		}
	}
	return ""
}

// stdinIsTerminal tells whether r is a terminal a person answers at.
var stdinIsTerminal = isTerminalFile

func isTerminalFile(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// confirm asks question on the terminal and goes on only on y or yes;
// without a terminal, only --yes lets a destructive command run.
func confirm(cmd *cobra.Command, yes bool, question string) error {
	if yes {
		return nil
	}
	in := cmd.InOrStdin()
	if !stdinIsTerminal(in) {
		return usageErrorf("refusing without confirmation: no terminal to ask on; pass --yes")
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return refusedError{msg: "not confirmed: nothing changed"}
}

// operator is who ran a command, for the audit trail.
func operator() broker.Actor {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return broker.Actor{Kind: "operator", Subject: name}
}

func (g *globals) reportChange(w io.Writer, st *app.Backend, iss *jwt.Issuer, c broker.KeyChange) error {
	keys, err := st.Keys.SigningKeys(context.Background())
	if err != nil {
		return err
	}
	g.printKeys(w, keys, iss, c.Empty())
	return nil
}

// printKeys lists the keys and, under the table, each stored key that is
// refused (not the key its row claims) and why: retire it. With -o json
// or yaml: {"keys": [{kid, alg, state, created_at, …, refused}],
// "unchanged": true when a change had nothing to do}.
func (g *globals) printKeys(w io.Writer, keys []broker.SigningKey, iss *jwt.Issuer, unchanged bool) {
	at := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	type keyJSON struct {
		KID           string `json:"kid"`
		Alg           string `json:"alg"`
		State         string `json:"state"`
		CreatedAt     string `json:"created_at"`
		ActivatedAt   string `json:"activated_at,omitempty"`
		DeactivatedAt string `json:"deactivated_at,omitempty"`
		RetiredAt     string `json:"retired_at,omitempty"`
		Refused       string `json:"refused,omitempty"`
	}
	doc := struct {
		Keys      []keyJSON `json:"keys"`
		Unchanged bool      `json:"unchanged,omitempty"`
	}{Keys: []keyJSON{}, Unchanged: unchanged}
	for _, k := range keys {
		kj := keyJSON{KID: k.KID, Alg: k.Alg, State: string(k.State), CreatedAt: at(k.CreatedAt),
			ActivatedAt: at(k.ActivatedAt), DeactivatedAt: at(k.DeactivatedAt), RetiredAt: at(k.RetiredAt)}
		if err := iss.Check(k); err != nil {
			kj.Refused = err.Error()
		}
		doc.Keys = append(doc.Keys, kj)
	}
	raw, _ := json.Marshal(doc)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	g.emit(w, raw, func(tw io.Writer) {
		if unchanged {
			fmt.Fprintln(tw, "nothing to change")
		}
		fmt.Fprintln(tw, "KID\tALG\tSTATE\tCREATED\tACTIVATED\tDEACTIVATED\tRETIRED")
		for _, k := range doc.Keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shown(k.KID), shown(k.Alg), shown(k.State), dash(k.CreatedAt),
				dash(k.ActivatedAt), dash(k.DeactivatedAt), dash(k.RetiredAt))
		}
	})
	for _, k := range doc.Keys {
		if k.Refused != "" && !g.machine() {
			fmt.Fprintf(w, "REFUSED: %s; retire it: errand keys retire KID\n", k.Refused)
		}
	}
}
