package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/errandhq/errand/config"
)

// selfSigned writes a certificate and key for 127.0.0.1, signed by parent
// (or by itself), and returns the certificate.
func selfSigned(t *testing.T, certFile, keyFile string, serial int64, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "errand test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func TestServeTLS(t *testing.T) {
	certCheckEvery = 10 * time.Millisecond
	t.Cleanup(func() { certCheckEvery = time.Second })
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first, _ := selfSigned(t, certFile, keyFile, 1, true, nil, nil)
	cfg, _, _, _ := loadServeConfig(t)
	cfg.TLS = &config.TLS{CertFile: certFile, KeyFile: keyFile}
	addr, _ := startServe(t, cfg, nil)

	get := func(tc *tls.Config) (*x509.Certificate, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 5 * time.Second}
		res, err := c.Get("https://" + addr + "/healthz")
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("healthz: %d", res.StatusCode)
		}
		return res.TLS.PeerCertificates[0], nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(first)
	if got, err := get(&tls.Config{RootCAs: pool}); err != nil || got.SerialNumber.Int64() != 1 {
		t.Fatalf("HTTPS: %v %v", got, err)
	}
	if _, err := get(&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	if res, err := http.Get("http://" + addr + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP was served on the TLS listener")
		}
	}

	// A renewed certificate is picked up without restart; a broken one is not.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if got, err := get(&tls.Config{RootCAs: pool}); err != nil || got.SerialNumber.Int64() != 1 {
		t.Fatalf("after a broken renewal the old certificate must stay: %v %v", got, err)
	}
	second, _ := selfSigned(t, certFile, keyFile, 2, true, nil, nil)
	pool.AddCert(second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := get(&tls.Config{RootCAs: pool})
		if err == nil && got.SerialNumber.Int64() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not picked up: %v %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeMutualTLS(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	ca, caKey := selfSigned(t, p("ca.pem"), p("ca-key.pem"), 10, true, nil, nil)
	selfSigned(t, p("cert.pem"), p("key.pem"), 11, false, ca, caKey)
	selfSigned(t, p("client.pem"), p("client-key.pem"), 12, false, ca, caKey)
	cfg, _, _, _ := loadServeConfig(t)
	cfg.TLS = &config.TLS{CertFile: p("cert.pem"), KeyFile: p("key.pem"), ClientCAFile: p("ca.pem")}
	addr, _ := startServe(t, cfg, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	try := func(certs []tls.Certificate) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}, Timeout: 5 * time.Second}
		res, err := c.Get("https://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	if err := try(nil); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	cc, err := tls.LoadX509KeyPair(p("client.pem"), p("client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := try([]tls.Certificate{cc}); err != nil {
		t.Fatalf("a client with a certificate of the CA: %v", err)
	}
}
