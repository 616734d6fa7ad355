package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/client"
)

// globals are the flags every client command shares.
type globals struct {
	server string
	token  string
	// tokenFile holds the identity token (--token-file), for scripts.
	tokenFile string
	output    outputFormat
	// cacert, cert and key reach a server over TLS: the CA bundle that
	// verifies it, and a client certificate for mutual TLS.
	cacert, cert, key string
}

// outputFormat is -o: table (for people), json or yaml (for scripts).
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
	outputYAML  outputFormat = "yaml"
)

var outputFormats = []string{string(outputTable), string(outputJSON), string(outputYAML)}

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(v string) error {
	switch outputFormat(v) {
	case outputTable, outputJSON, outputYAML:
		*o = outputFormat(v)
		return nil
	}
	return fmt.Errorf("must be one of %s", strings.Join(outputFormats, ", "))
}

// jsonAlias is --json: -o json.
type jsonAlias struct{ o *outputFormat }

func (j jsonAlias) String() string   { return fmt.Sprint(*j.o == outputJSON) }
func (j jsonAlias) Type() string     { return "bool" }
func (j jsonAlias) IsBoolFlag() bool { return true }
func (j jsonAlias) Set(v string) error {
	switch v {
	case "true":
		*j.o = outputJSON
	case "false":
		if *j.o == outputJSON {
			*j.o = outputTable
		}
	default:
		return fmt.Errorf("%q is not true or false", v)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (g *globals) register(root *cobra.Command) {
	g.output = outputTable
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("ERRAND_SERVER", "http://127.0.0.1:8080"), "Errand server URL (env ERRAND_SERVER)")
	pf.StringVar(&g.token, "token", os.Getenv("ERRAND_TOKEN"), "your identity token (env ERRAND_TOKEN); default the one errand login keeps for --server")
	pf.StringVar(&g.tokenFile, "token-file", os.Getenv("ERRAND_TOKEN_FILE"), "a file holding your identity token (env ERRAND_TOKEN_FILE), read at each command")
	pf.VarP(&g.output, "output", "o", "output format: table, json or yaml (json and yaml print errors' problem documents on stdout too)")
	pf.Var(jsonAlias{&g.output}, "json", "the same as -o json")
	pf.Lookup("json").NoOptDefVal = "true"
	pf.StringVar(&g.cacert, "cacert", os.Getenv("ERRAND_CACERT"), "PEM CA bundle that verifies an https --server (env ERRAND_CACERT)")
	pf.StringVar(&g.cert, "cert", os.Getenv("ERRAND_CERT"), "PEM client certificate for mutual TLS (env ERRAND_CERT)")
	pf.StringVar(&g.key, "key", os.Getenv("ERRAND_KEY"), "PEM private key of --cert (env ERRAND_KEY)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
}

func (g *globals) machine() bool { return g.output == outputJSON || g.output == outputYAML }

// client is the API client for --server, with --cacert, --cert and --key
// applied. A TLS file that cannot be read is a usage error, reported by
// the first call.
func (g *globals) client() *client.Client {
	// The token: --token, --token-file, or errand login's (login.go).
	tok, err := g.identityToken(context.Background())
	c := g.clientWith(tok)
	if err != nil {
		c.HTTP.Transport = loginFailed{err}
	}
	return c
}

// clientWith is client with the identity token tok.
func (g *globals) clientWith(tok string) *client.Client {
	c := client.New(g.server, tok)
	if g.cacert == "" && g.cert == "" && g.key == "" {
		return c
	}
	cfg, err := g.tlsConfig()
	if err != nil {
		c.HTTP.Transport = failingTransport{err}
		return c
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	c.HTTP.Transport = tr
	return c
}

func (g *globals) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.cacert != "" {
		pem, err := os.ReadFile(g.cacert)
		if err != nil {
			return nil, usageErrorf("--cacert: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--cacert: %s holds no PEM certificate", g.cacert)
		}
		cfg.RootCAs = pool
	}
	if (g.cert == "") != (g.key == "") {
		return nil, usageErrorf("--cert and --key go together")
	}
	if g.cert != "" {
		pair, err := tls.LoadX509KeyPair(g.cert, g.key)
		if err != nil {
			return nil, usageErrorf("--cert/--key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// failingTransport answers every request with the error that kept the
// client's TLS settings from loading.
type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

// emit prints the server's JSON answer as it is (-o json), as YAML
// (-o yaml), or the human form (-o table).
func (g *globals) emit(w io.Writer, raw []byte, human func(io.Writer)) {
	switch g.output {
	case outputJSON:
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") == nil {
			raw = buf.Bytes()
		}
		fmt.Fprintln(w, strings.TrimSpace(string(raw)))
	case outputYAML:
		fmt.Fprint(w, toYAML(raw))
	default:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		human(tw)
		tw.Flush()
	}
}

// toYAML renders a JSON document as YAML (keys sorted); a document that
// is not JSON is printed as it is.
func toYAML(raw []byte) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return string(raw) + "\n"
	}
	out, err := yaml.Marshal(yamlNumbers(v))
	if err != nil {
		return string(raw) + "\n"
	}
	return string(out)
}

// yamlNumbers turns json.Number into integers or floats, which YAML
// prints bare.
func yamlNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = yamlNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = yamlNumbers(e)
		}
	}
	return v
}

// when renders an RFC 3339 time with its distance from now beside it:
// "2026-12-06T05:00:00Z (in 59m)", "… (3m ago)".
func when(ts string, now time.Time) string {
	if ts == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return shown(ts)
	}
	return t.UTC().Format(time.RFC3339) + " (" + relative(t, now) + ")"
}

func relative(t, now time.Time) string {
	d := t.Sub(now)
	suffix, prefix := "", "in "
	if d < 0 {
		d, suffix, prefix = -d, " ago", ""
	}
	var s string
	switch {
	case d < time.Minute:
		return "now"
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		s = fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return prefix + s + suffix
}

// goalCell renders an agent's goal in a table cell: quoted as the views
// quote it, cut to a width a row can hold (the cut is marked outside the
// quotes, so it never passes for the agent's words).
func goalCell(goal string) string {
	const width = 40
	r := []rune(goal)
	if len(r) <= width {
		return quoted(goal)
	}
	return quoted(string(r[:width])) + "…"
}
