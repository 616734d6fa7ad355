package main

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/devidp"
	"github.com/errandhq/errand/store/sqlite"
)

func newDev(g *globals) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Errand for development: SQLite, a built-in identity provider, an example config",
		Long: `errand dev runs the whole broker in one process with no setup: state in an
embedded SQLite file, a generated signing key, an example action catalog, and a
development identity provider that hands out agent, user and resource-server ID
tokens for any name (POST /dev/token). That identity provider trusts whoever
asks: it exists only in dev, and errand serve never exposes it.

--policies loads policy files (glob patterns, relative to the working
directory) as errand serve's "policies" setting does, and --policy-schema
validates them against a schema; with --policy-engine opa they are Rego files.

--config reads your own catalog from an errand.yaml: its actions, audiences,
grants, deny_actions, limits, dpop, policies (relative to the file), vault
block and id_jag_targets replace the example's. Its issuers are replaced by the development
identity provider's three (agent, user, resource): a grant's issuer and an
introspector's issuer that name one of the file's issuers are rewritten to the
dev issuer of the same kind, so grants and introspectors keep working with
errand dev token. listen, public_url, database_url, system_secret, tls, keys,
signing_alg, trusted_proxies and audit_anchor_every are errand dev's own.

--listen must be a loopback address: anyone who reaches /dev/token gets any
identity, an admin's and an auditor's included. A non-loopback address is
refused unless --insecure-expose-dev-identities is given, and then warned
about at start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			return runDev(ctx, o, cmd.OutOrStdout(), log, nil)
		},
	}
	cmd.Flags().StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on (loopback only, unless --insecure-expose-dev-identities)")
	cmd.Flags().StringVar(&o.db, "db", "errand-dev.db", `SQLite database file, or ":memory:" for a throwaway one`)
	cmd.Flags().StringVar(&o.config, "config", "", "an errand.yaml whose catalog, grants, audiences, limits, policies and id_jag_targets replace the example's (its issuers are replaced by the dev identity provider's)")
	cmd.Flags().StringArrayVar(&o.policies.patterns, "policies", nil, "policy files, a glob pattern such as 'policies/*.cedar' (or *.rego with --policy-engine opa) (repeat)")
	cmd.Flags().StringVar(&o.policies.schema, "policy-schema", "", "a Cedar schema to validate the policies against")
	cmd.Flags().StringVar(&o.policies.engine, "policy-engine", "", "the language of --policies: cedar (default) or opa (Rego files such as 'policies/*.rego')")
	cmd.Flags().BoolVar(&o.exposeIdentities, "insecure-expose-dev-identities", false,
		"allow a non-loopback --listen, handing out any identity (admins' and auditors' too) to whoever reaches it")

	var (
		kind, sub string
		groups    []string
	)
	token := &cobra.Command{
		Use:   "token",
		Short: "Get a development ID token from a running errand dev",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := g.client().DevToken(cmd.Context(), kind, sub, groups)
			if err != nil {
				return err
			}
			raw, _ := json.Marshal(map[string]string{"id_token": tok})
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { fmt.Fprintln(w, tok) })
			return nil
		},
	}
	token.Flags().StringVar(&kind, "kind", "agent", "agent, user or resource")
	_ = token.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions([]string{"agent", "user", "resource"}, cobra.ShellCompDirectiveNoFileComp))
	token.Flags().StringVar(&sub, "sub", "", "the principal's name")
	token.Flags().StringArrayVar(&groups, "group", nil, "a group of a user (repeat), e.g. eng or auditors")
	_ = token.MarkFlagRequired("sub")
	cmd.AddCommand(token)
	return cmd
}

// devPolicies are errand dev's --policies, --policy-schema and
// --policy-engine.
type devPolicies struct {
	patterns []string
	schema   string
	engine   string
}

// devOptions are errand dev's flags.
type devOptions struct {
	listen, db string
	policies   devPolicies
	// exposeIdentities allows a --listen address that is not loopback.
	exposeIdentities bool
	// config, when set, is an errand.yaml whose catalog replaces the
	// example's.
	config string
}

// runDev runs errand dev until ctx ends. When ready is not nil it receives
// the base URL once serving.
func runDev(ctx context.Context, o devOptions, out io.Writer, log *slog.Logger, ready chan<- string) error {
	db, pol := o.db, o.policies
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	// The address bound decides, not the one written: a host name, an
	// empty host or 0.0.0.0 may bind beyond this machine.
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		if !o.exposeIdentities {
			return fmt.Errorf("--listen %s binds %s, which is not a loopback address: errand dev's /dev/token hands out any identity "+
				"(an admin's, an auditor's) to whoever reaches it; listen on 127.0.0.1 or [::1], or pass --insecure-expose-dev-identities",
				o.listen, ln.Addr())
		}
		log.Warn("INSECURE: errand dev listens on a non-loopback address (--insecure-expose-dev-identities): "+
			"whoever reaches it can take any identity, an admin's and an auditor's included, from /dev/token",
			"listen", ln.Addr().String())
	}
	base := "http://" + ln.Addr().String()
	secret, err := devSecret(db)
	if err != nil {
		return err
	}
	seed, err := hkdf.Key(sha256.New, secret, nil, "errand dev identity provider v1", 32)
	if err != nil {
		return err
	}
	idp, err := devidp.New(base, seed)
	if err != nil {
		return err
	}
	cfg := devConfig(base, db, string(secret), idp)
	if o.config != "" {
		if err := useCatalog(cfg, o.config, idp); err != nil {
			return err
		}
		log.Info("errand dev: catalog, grants, audiences, limits and policies from "+o.config+"; its issuers are replaced by the dev identity provider's",
			"config", o.config)
	}
	if len(pol.patterns) > 0 || pol.schema != "" {
		// Relative policy paths are read from the working directory.
		cfg.Dir, cfg.Policies, cfg.PolicySchema = ".", pol.patterns, pol.schema
		cfg.PolicyEngine, cfg.PolicyData, cfg.PolicyTimeout = pol.engine, "", 0
	}
	if err := cfg.Validate(); err != nil {
		if o.config != "" {
			return fmt.Errorf("%s with the dev identity provider: %w", o.config, err)
		}
		if len(pol.patterns) > 0 || pol.schema != "" {
			return err
		}
		return fmt.Errorf("built-in dev config: %w", err)
	}
	b, err := app.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.Migrate(ctx); err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, b, log, app.Options{})
	if err != nil {
		return err
	}
	defer a.Close()
	mux := http.NewServeMux()
	mux.Handle("/dev/", idp.Handler())
	mux.Handle("/", a.Handler())
	printQuickstart(out, base, db, o.config)
	return run(ctx, ln, mux, a, log, ready)
}

// devSecret is the system secret of a dev database, kept beside it in a
// 0600 file so that signing keys and dev identities survive a restart.
func devSecret(db string) ([]byte, error) {
	fresh := func() ([]byte, error) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(b[:])), nil
	}
	if db == sqlite.Memory {
		return fresh()
	}
	path := db + ".secret"
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 32 {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("%s: too short; remove it together with %s to start afresh", path, db)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	s, err := fresh()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, append(s, '\n'), 0o600); err != nil {
		return nil, err
	}
	return s, nil
}

// devConfig is the built-in example configuration of errand dev.
func devConfig(base, db, secret string, idp *devidp.Provider) *config.Config {
	issuer := func(kind string) config.Issuer {
		is := config.Issuer{URL: idp.IssuerURL(kind), Audience: devidp.Audience, Kind: kind, Algorithms: []string{"EdDSA"}}
		if kind == "user" {
			is.GroupsClaim, is.AuditorGroup, is.AdminGroup = "groups", "auditors", "admins"
			// People sign in to the pages with the dev provider's picker.
			is.ClientID = devidp.Audience
		}
		return is
	}
	return &config.Config{
		Listen: strings.TrimPrefix(base, "http://"), PublicURL: base, DatabaseURL: "sqlite://" + db,
		SystemSecret: secret,
		Issuers:      []config.Issuer{issuer("agent"), issuer("user"), issuer("resource")},
		Actions: []config.Action{
			{Name: "github.repo.read", Class: "read", Risk: "low", Description: "Read code, issues and pull requests"},
			{Name: "github.pr.write", Class: "write", Risk: "medium", Description: "Open, update and comment on pull requests"},
			{Name: "github.repo.delete", Class: "admin", Risk: "high", Description: "Delete a repository"},
			{Name: "github.keys.create", Class: "credential", Risk: "high", Description: "Create deploy keys (never grantable to an agent)"},
			{Name: "okta.user.update", Class: "identity", Risk: "high", Description: "Change a person's account (never grantable to an agent)"},
		},
		Audiences: []config.Audience{
			// errand dev is a playground: any resource server it hands
			// out tokens for may introspect. Bind introspectors in serve.
			{URL: "https://api.github.com", Environment: "prod", AnyIntrospector: true},
			{URL: "http://localhost:9000", Environment: "local", AnyIntrospector: true},
		},
		Grants: []config.Grant{{Group: "eng", Scopes: []string{
			"github.repo.read:acme/**", "github.pr.write:acme/**", "github.keys.create:acme/**",
		}}},
	}
}

// useCatalog replaces the example catalog of cfg by the one of the config
// file at path, with the file's issuers replaced by the dev identity
// provider's: references to a file issuer (a grant's issuer, an
// introspector) are rewritten to the dev issuer of its kind.
func useCatalog(cfg *config.Config, path string, idp *devidp.Provider) error {
	// Only what the catalog is made of must be set: the file's secrets
	// and addresses are errand dev's own.
	file, _, err := config.LoadCatalog(path)
	if err != nil {
		return err
	}
	kinds := map[string]string{}
	for _, is := range file.Issuers {
		kinds[strings.TrimSuffix(is.URL, "/")] = is.Kind
	}
	devIssuer := func(iss string) string {
		if k, ok := kinds[strings.TrimSuffix(iss, "/")]; ok {
			return idp.IssuerURL(k)
		}
		return iss
	}
	cfg.Actions, cfg.Audiences, cfg.Grants, cfg.DenyActions = file.Actions, file.Audiences, file.Grants, file.DenyActions
	for i := range cfg.Grants {
		if cfg.Grants[i].Issuer != "" {
			cfg.Grants[i].Issuer = devIssuer(cfg.Grants[i].Issuer)
		}
	}
	for i := range cfg.Audiences {
		for j, ref := range cfg.Audiences[i].Introspectors {
			if iss, sub, ok := strings.Cut(ref, "#"); ok {
				cfg.Audiences[i].Introspectors[j] = devIssuer(iss) + "#" + sub
			}
		}
	}
	cfg.Limits, cfg.DPoP, cfg.Vault, cfg.IDJAGTargets = file.Limits, file.DPoP, file.Vault, file.IDJAGTargets
	cfg.Dir, cfg.Policies, cfg.PolicySchema = file.Dir, file.Policies, file.PolicySchema
	// Webhooks too, so that notifications can be tried on errand dev.
	cfg.Notifications = file.Notifications
	cfg.PolicyEngine, cfg.PolicyData, cfg.PolicyTimeout = file.PolicyEngine, file.PolicyData, file.PolicyTimeout
	return nil
}

func printQuickstart(w io.Writer, base, db, cfgPath string) {
	e := os.Args[0] // as invoked, so the commands work when pasted
	if strings.Contains(e, "go-build") {
		e = "go run ./cmd/errand"
	}
	state := db
	if db == sqlite.Memory {
		state = "memory (gone when it stops)"
	}
	catalog := `Example catalog: github.repo.read, github.pr.write, github.repo.delete (admin),
github.keys.create (credential, never grantable); group "eng" may delegate acme/**;
group "auditors" reads the history, group "admins" may suspend an agent.
Audiences https://api.github.com (environment prod), http://localhost:9000 (local).`
	if cfgPath != "" {
		catalog = "Catalog, grants, audiences, limits and policies: " + cfgPath + `, with the dev identity
provider's issuers in place of its own (dev users in group "auditors" read the
history, in group "admins" may suspend an agent).
The walkthrough below names the example catalog's actions: use your own.`
	}
	fmt.Fprintf(w, `Errand dev is ready at %[1]s (state: %[3]s).
Identity provider for development only: POST %[1]s/dev/token
%[4]s

Approve in a browser: %[1]s/ui/ (sign in by picking alice; carol audits at
%[1]s/ui/history). An agent's task for alice appears there once it asks:

  %[2]s task create --server %[1]s --token "$(%[2]s dev token --server %[1]s --kind agent --sub agent-1)" \
      --on-behalf-of alice --goal "fix the flaky test" --scope 'github.repo.read:acme/**' --audience https://api.github.com

Or walk the whole flow from another shell with the CLI (paste as is):

  E="%[2]s"; export ERRAND_SERVER=%[1]s
  AGENT=$($E dev token --kind agent --sub agent-1)
  ALICE=$($E dev token --kind user --sub alice --group eng)
  RS=$($E dev token --kind resource --sub api-gateway)
  AUDITOR=$($E dev token --kind user --sub carol --group auditors)
  TASK=$($E task create -q --token "$AGENT" --on-behalf-of alice --goal "fix the flaky test" \
      --scope 'github.repo.read:acme/**' --scope github.pr.write:acme/api --audience https://api.github.com)
  $E task list --token "$ALICE" --status pending
  $E task approve "$TASK" --yes --token "$ALICE" --scope github.repo.read:acme/api
  AT=$($E token mint "$TASK" -q --token "$AGENT" --scope github.repo.read:acme/api --audience https://api.github.com)
  $E token introspect "$AT" --token "$RS"
  $E token mint "$TASK" --token "$AGENT" --scope 'github.repo.read:acme/**' --audience https://api.github.com
  $E task close "$TASK" --token "$AGENT"
  $E token introspect "$AT" --token "$RS"
  $E audit events --token "$AUDITOR" --task "$TASK"

`, base, e, state, catalog)
}
