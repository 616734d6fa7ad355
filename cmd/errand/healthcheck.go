package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// defaultHealthcheckURL is where the container image's serve listens
// (ERRAND_LISTEN=0.0.0.0:8080 in the Dockerfile), seen from inside it.
const defaultHealthcheckURL = "http://127.0.0.1:8080"

// newHealthcheck is `errand healthcheck`: the container image has no shell
// and no curl, so its HEALTHCHECK (and any exec probe) runs the binary
// itself. It exits 0 when GET <url>/readyz answers 200 (the server runs
// and its database answers), and 1 otherwise, as Docker expects.
func newHealthcheck() *cobra.Command {
	var (
		base, caFile string
		insecure     bool
		timeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if a server's /readyz answers 200, 1 otherwise (for container health checks)",
		Example: `  errand healthcheck                                   # http://127.0.0.1:8080/readyz
  errand healthcheck --url https://127.0.0.1:8443 --cacert /etc/errand/tls/ca.pem
  HEALTHCHECK CMD ["/usr/local/bin/errand", "healthcheck"]   # in a Dockerfile`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
			if caFile != "" {
				pem, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("healthcheck: %w", err)
				}
				tc.RootCAs = x509.NewCertPool()
				if !tc.RootCAs.AppendCertsFromPEM(pem) {
					return fmt.Errorf("healthcheck: no certificate in %s", caFile)
				}
			}
			hc := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil}}
			return probeReady(cmd.Context(), hc, base)
		},
	}
	def := defaultHealthcheckURL
	if v := os.Getenv("ERRAND_HEALTHCHECK_URL"); v != "" {
		def = v
	}
	cmd.Flags().StringVar(&base, "url", def, "the server's base URL; /readyz is appended (env ERRAND_HEALTHCHECK_URL)")
	cmd.Flags().StringVar(&caFile, "cacert", "", "PEM file of the CA that signed the server's certificate")
	cmd.Flags().BoolVar(&insecure, "insecure-skip-verify", false, "do not verify the server's certificate (a probe of the local server under a name it lacks)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}

// probeReady is nil when GET base/readyz answers 200.
func probeReady(ctx context.Context, hc *http.Client, base string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	u := strings.TrimSuffix(base, "/") + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusOK {
		return errors.New("healthcheck: " + u + ": " + res.Status + ": " + strings.TrimSpace(string(body)))
	}
	return nil
}
