package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/errandhq/errand/config"
)

// certCheckEvery bounds how often the certificate files are looked at.
var certCheckEvery = time.Second

// certReloader serves the certificate of cert_file and key_file, and loads
// them again when either file changes (a renewal by certbot, cert-manager
// or a sidecar), without a restart. A pair that does not load is logged
// and the one in use stays.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.fileStamp()
	if err != nil {
		return nil, err
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	r.cert, r.stamp, r.checked = &c, stamp, time.Now()
	return r, nil
}

// fileStamp changes whenever either file is replaced or rewritten.
func (r *certReloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("tls: %w", err)
		}
		s += fmt.Sprintf("%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= certCheckEvery {
		r.checked = time.Now()
		if stamp, err := r.fileStamp(); err == nil && stamp != r.stamp {
			if c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile); err != nil {
				r.log.Error("tls: the new certificate does not load; the one in use stays", "err", err)
			} else {
				r.cert, r.stamp = &c, stamp
				r.log.Info("tls: certificate reloaded", "cert_file", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// tlsConfig is the server's TLS: 1.2 and later only, the certificate
// reloaded on change, and client certificates required and verified
// against client_ca_file when it is set.
func tlsConfig(c *config.TLS, log *slog.Logger) (*tls.Config, error) {
	r, err := newCertReloader(c.CertFile, c.KeyFile, log)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("tls.client_ca_file: no PEM certificate in it")
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// listen opens the configured listener, with TLS when configured; without
// it, a listener off loopback is warned about (TLS is then expected from a
// proxy in front, which public_url then names with https).
func listen(cfg *config.Config, log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.TLS == nil {
		if !loopback(ln.Addr()) {
			log.Warn("serving plain HTTP off loopback: bearer tokens cross the network in clear unless a TLS proxy is in front; set tls: {cert_file, key_file}",
				"listen", ln.Addr().String())
		}
		return ln, nil
	}
	tc, err := tlsConfig(cfg.TLS, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if tc.ClientAuth == tls.NoClientCert && cfg.AcceptsX509SVIDs() {
		// X.509-SVIDs are asked for, never required, and verified by
		// identity against their trust domain's bundle, not by TLS.
		tc.ClientAuth = tls.RequestClientCert
	}
	return tls.NewListener(ln, tc), nil
}

func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
