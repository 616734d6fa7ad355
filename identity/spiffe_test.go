package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testoidc"
)

// These tests verify JWT-SVIDs with go-spiffe against bundles built and
// served with go-spiffe itself (spiffebundle, and federation's bundle
// endpoint handler, the format SPIRE's bundle endpoint serves). The
// SVIDs are signed with go-jose as SPIRE signs them: ES256, kid, typ JWT,
// sub the SPIFFE ID, no iss. identity's SPIRE test (spire_test.go) runs
// the same checks against a real SPIRE server and agent.

type tdKeys struct {
	td   spiffeid.TrustDomain
	keys map[string]testoidc.Key
}

func newTD(t *testing.T, name string, kids ...string) *tdKeys {
	t.Helper()
	d := &tdKeys{td: spiffeid.RequireTrustDomainFromString(name), keys: map[string]testoidc.Key{}}
	for _, kid := range kids {
		d.add(t, kid)
	}
	return d
}

func (d *tdKeys) add(t *testing.T, kid string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d.keys[kid] = testoidc.Key{KID: kid, Alg: "ES256", Priv: k}
}

// bundle is the trust domain's SPIFFE bundle of its current keys.
func (d *tdKeys) bundle() *spiffebundle.Bundle {
	auth := map[string]crypto.PublicKey{}
	for kid, k := range d.keys {
		auth[kid] = k.Priv.Public()
	}
	return spiffebundle.FromJWTAuthorities(d.td, auth)
}

func (d *tdKeys) writeFile(t *testing.T, path string) {
	t.Helper()
	b, err := d.bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// svid signs a JWT-SVID for id with the key kid of d; extra claims are
// merged in (nil deletes one).
func svid(t *testing.T, key testoidc.Key, id string, extra map[string]any) string {
	t.Helper()
	now := time.Now()
	c := map[string]any{"sub": id, "aud": []string{"errand"}, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return testoidc.SignRaw(t, key, map[string]any{"typ": "JWT"}, payload)
}

func fileVerifier(t *testing.T, path string, subjects ...string) *Verifier {
	t.Helper()
	v, err := New(Config{Self: "https://errand.test", Issuers: []Issuer{{
		Audience: "errand", Kind: broker.KindAgent, Subjects: subjects,
		SPIFFE: &SPIFFE{TrustDomain: "example.org", File: path},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func wantRefused(t *testing.T, v *Verifier, tok, why string) {
	t.Helper()
	p, err := v.Verify(context.Background(), tok)
	if !errors.Is(err, broker.ErrInvalidToken) {
		t.Fatalf("%s: got %+v, %v; want invalid_token", why, p, err)
	}
}

const agent7 = "spiffe://example.org/ns/agents/sa/agent-7"

// A JWT-SVID without iss is an agent of its trust domain, named by its
// SPIFFE ID; one of another trust domain, expired, for another audience
// or for several, or outside subjects is refused.
func TestSPIFFEJWTSVID(t *testing.T) {
	dir := t.TempDir()
	td := newTD(t, "example.org", "k1")
	td.writeFile(t, filepath.Join(dir, "bundle.json"))
	v := fileVerifier(t, filepath.Join(dir, "bundle.json"), "spiffe://example.org/ns/agents/**")
	ctx := context.Background()

	p, err := v.Verify(ctx, svid(t, td.keys["k1"], agent7, nil))
	if err != nil {
		t.Fatal(err)
	}
	if p.Issuer != "spiffe://example.org" || p.Subject != agent7 || p.Kind != broker.KindAgent {
		t.Fatalf("principal %+v", p)
	}

	other := newTD(t, "other.org", "k1")
	wantRefused(t, v, svid(t, other.keys["k1"], "spiffe://other.org/ns/agents/sa/agent-7", nil), "another trust domain")
	// Another trust domain's key (same kid) claiming this trust domain's ID.
	wantRefused(t, v, svid(t, other.keys["k1"], agent7, nil), "signed by another trust domain's key")
	wantRefused(t, v, svid(t, td.keys["k1"], agent7, map[string]any{
		"iat": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-10 * time.Minute).Unix()}), "expired")
	wantRefused(t, v, svid(t, td.keys["k1"], agent7, map[string]any{"aud": []string{"other"}}), "wrong audience")
	wantRefused(t, v, svid(t, td.keys["k1"], agent7, map[string]any{"aud": []string{"errand", "other"}}), "two audiences")
	wantRefused(t, v, svid(t, td.keys["k1"], "spiffe://example.org/ns/payments/sa/agent-7", nil), "outside subjects")
	wantRefused(t, v, svid(t, td.keys["k1"], "spiffe://example.org/ns/agents/../x", nil), "bad SPIFFE ID path")
	wantRefused(t, v, svid(t, td.keys["k1"], agent7, map[string]any{"exp": nil}), "no exp")
	wantRefused(t, v, svid(t, td.keys["k1"], agent7, map[string]any{"exp": time.Now().Add(48 * time.Hour).Unix()}), "lifetime over 24 h")
	wantRefused(t, v, svid(t, testoidc.Key{KID: "k1", Alg: "ES256", Priv: other.keys["k1"].Priv}, agent7, nil), "forged with the right kid")
	// The error never echoes the caller's claims (H03).
	_, err = v.Verify(ctx, svid(t, td.keys["k1"], agent7, map[string]any{"aud": []string{"<script>"}}))
	if err == nil || strings.Contains(err.Error(), "<script>") {
		t.Fatalf("wrong audience error: %v", err)
	}
}

// A rotation written to the bundle file takes effect on the next
// verification: the new key is accepted, the removed one refused — even
// for a token verified before (JWT-SVIDs are never served from the cache).
func TestSPIFFEBundleFileRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.json")
	td := newTD(t, "example.org", "old")
	td.writeFile(t, path)
	v := fileVerifier(t, path)
	ctx := context.Background()
	oldTok := svid(t, td.keys["old"], agent7, nil)
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatal(err)
	}
	oldKey := td.keys["old"]
	td.add(t, "new")
	td.writeFile(t, path)
	newTok := svid(t, td.keys["new"], agent7, nil)
	for _, tok := range []string{oldTok, newTok} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatalf("during the overlap: %v", err)
		}
	}
	delete(td.keys, "old")
	td.writeFile(t, path)
	if _, err := v.Verify(ctx, newTok); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	wantRefused(t, v, oldTok, "token of the removed key")
	wantRefused(t, v, svid(t, oldKey, agent7, nil), "fresh token of the removed key")

	// A missing or broken bundle is an outage, not a bad token.
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, newTok); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("broken bundle file: %v", err)
	}
}

// The bundle from a SPIFFE bundle endpoint (https_web profile), served
// by go-spiffe's federation handler: fetched on first use, again on an
// unknown kid (a new key), and again after its refresh period (a removed
// key refused).
func TestSPIFFEBundleEndpoint(t *testing.T) {
	td := newTD(t, "example.org", "k1")
	var mu sync.Mutex
	served := td.bundle()
	serve := func(b *spiffebundle.Bundle) { mu.Lock(); served = b; mu.Unlock() }
	h, err := federation.NewHandler(td.td, sourceFunc(func() *spiffebundle.Bundle { mu.Lock(); defer mu.Unlock(); return served }))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	v, err := New(Config{Self: "https://errand.test", Now: clock, Issuers: []Issuer{{
		Audience: "errand", Kind: broker.KindAgent,
		SPIFFE: &SPIFFE{TrustDomain: "example.org", EndpointURL: srv.URL, EndpointRoots: roots, RefreshEvery: time.Minute},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ctx := context.Background()
	k1 := svid(t, td.keys["k1"], agent7, nil)
	if _, err := v.Verify(ctx, k1); err != nil {
		t.Fatal(err)
	}
	// Rotation: k2 published, then k1 removed.
	td.add(t, "k2")
	serve(td.bundle())
	clockMu.Lock()
	now = now.Add(time.Minute) // past the unknown-kid cool-down
	clockMu.Unlock()
	k2 := svid(t, td.keys["k2"], agent7, nil)
	if _, err := v.Verify(ctx, k2); err != nil {
		t.Fatalf("a new key, fetched on its unknown kid: %v", err)
	}
	delete(td.keys, "k1")
	serve(td.bundle())
	if _, err := v.Verify(ctx, k1); err != nil {
		t.Fatalf("before the refresh period the fetched bundle stands: %v", err)
	}
	clockMu.Lock()
	now = now.Add(2 * time.Minute)
	clockMu.Unlock()
	wantRefused(t, v, k1, "a key removed from the endpoint's bundle, after the refresh period")
	if _, err := v.Verify(ctx, k2); err != nil {
		t.Fatal(err)
	}
	// A flood of unknown kids fetches at most once per cool-down.
	src := v.issuers["spiffe://example.org"].spiffe.src.(*httpSource)
	before := src.Fetches()
	for i := range 20 {
		wantRefused(t, v, svid(t, testoidc.Key{KID: fmt.Sprint("rnd", i), Alg: "ES256", Priv: td.keys["k2"].Priv}, agent7, nil), "unknown kid")
	}
	if n := src.Fetches() - before; n > 1 {
		t.Fatalf("%d fetches for 20 unknown kids", n)
	}
	// An endpoint that cannot be authenticated (Web PKI without the
	// test CA) is an outage.
	v2, err := New(Config{Self: "https://errand.test", Issuers: []Issuer{{
		Audience: "errand", Kind: broker.KindAgent,
		SPIFFE: &SPIFFE{TrustDomain: "example.org", EndpointURL: srv.URL},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Verify(ctx, k2); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("untrusted endpoint certificate: %v", err)
	}
}

type sourceFunc func() *spiffebundle.Bundle

func (f sourceFunc) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	b := f()
	if b.TrustDomain() != td {
		return nil, errors.New("no bundle")
	}
	return b, nil
}

// SPIRE's OIDC discovery provider serves the trust domain's JWT keys as
// an OIDC JWKS; an SVID is verified against them (here a real OIDC
// issuer over HTTP serves the keys).
func TestSPIFFEOIDCDiscoveryBundle(t *testing.T) {
	idp := testoidc.New(t)
	v, err := New(Config{Self: "https://errand.test", Issuers: []Issuer{{
		Audience: "errand", Kind: broker.KindResource,
		SPIFFE: &SPIFFE{TrustDomain: "example.org", OIDCDiscoveryURL: idp.URL},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ec := idp.Keys()[1]
	p, err := v.Verify(ctx, svid(t, ec, "spiffe://example.org/rs/ledger", nil))
	if err != nil || p.Kind != broker.KindResource || p.Subject != "spiffe://example.org/rs/ledger" {
		t.Fatalf("%+v %v", p, err)
	}
	// With an iss (SPIRE's jwt_issuer) the SVID is still chosen by its trust domain.
	if _, err := v.Verify(ctx, svid(t, ec, "spiffe://example.org/rs/ledger", map[string]any{"iss": idp.URL})); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, v, svid(t, ec, "spiffe://other.org/rs/ledger", nil), "other trust domain")
}

// SPIFFE ID patterns: * is one segment, a final ** one or more.
func TestSPIFFESubjectPatterns(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	cases := []struct {
		pat, id string
		want    bool
	}{
		{"spiffe://example.org/**", agent7, true},
		{"spiffe://example.org/*", agent7, false},
		{"spiffe://example.org/*", "spiffe://example.org/agent", true},
		{"spiffe://example.org/ns/*/sa/*", agent7, true},
		{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/agents/sa", false},
		{"spiffe://example.org/ns/agents/**", "spiffe://example.org/ns/agents", false},
		{"spiffe://example.org/ns/agents/**", "spiffe://example.org/ns/agents/x", true},
		{"spiffe://example.org/ns/agents/sa/agent-7", agent7, true},
		{"spiffe://example.org/ns/agents/sa/agent-7", agent7 + "/x", false},
		{"spiffe://example.org/ns/agents/sa/agent-*", agent7, false}, // no partial wildcards
		{"spiffe://example.org/**", "spiffe://example.org", false},
	}
	for _, c := range cases {
		p, err := parseSPIFFEPattern(td, c.pat)
		if c.pat == "spiffe://example.org/ns/agents/sa/agent-*" {
			if err == nil {
				t.Fatalf("%s: want a parse error", c.pat)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.pat, err)
		}
		if got := p.match(spiffeid.RequireFromString(c.id)); got != c.want {
			t.Errorf("%s ~ %s = %v, want %v", c.pat, c.id, got, c.want)
		}
	}
	for _, bad := range []string{"spiffe://other.org/**", "example.org/x", "spiffe://example.org/**/x", "spiffe://example.org/a//b", "spiffe://example.org/A/../b"} {
		if _, err := parseSPIFFEPattern(td, bad); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

// Configuration errors of a SPIFFE issuer stop start-up.
func TestSPIFFEIssuerConfig(t *testing.T) {
	for name, is := range map[string]Issuer{
		"no bundle":       {Audience: "errand", Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "example.org"}},
		"two bundles":     {Audience: "errand", Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "example.org", File: "a", WorkloadAPISocket: "/s"}},
		"bad td":          {Audience: "errand", Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "spiffe://Example.org", File: "a"}},
		"user kind":       {Audience: "errand", Kind: broker.KindUser, SPIFFE: &SPIFFE{TrustDomain: "example.org", File: "a"}},
		"url mismatch":    {URL: "spiffe://other.org", Audience: "errand", Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "example.org", File: "a"}},
		"http endpoint":   {Audience: "errand", Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "example.org", EndpointURL: "http://x"}},
		"no bootstrap":    {Audience: "errand", Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "example.org", EndpointURL: "https://x", EndpointSPIFFEID: "spiffe://example.org/spire/server"}},
		"bad subject":     {Audience: "errand", Kind: broker.KindAgent, Subjects: []string{"spiffe://other.org/*"}, SPIFFE: &SPIFFE{TrustDomain: "example.org", File: "a"}},
		"spiffe url only": {URL: "spiffe://example.org", Audience: "errand", Kind: broker.KindAgent},
		"no audience":     {Kind: broker.KindAgent, SPIFFE: &SPIFFE{TrustDomain: "example.org", File: "a"}},
	} {
		if _, err := New(Config{Issuers: []Issuer{is}}); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

// An unreachable bundle endpoint: the last bundle stays in use for three
// refresh periods, then the trust domain is unavailable (503), not
// trusted on keys that may have been removed meanwhile.
func TestSPIFFEBundleEndpointOutage(t *testing.T) {
	td := newTD(t, "example.org", "k1")
	h, err := federation.NewHandler(td.td, td.bundle())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	v, err := New(Config{Self: "https://errand.test", Now: clock, Issuers: []Issuer{{
		Audience: "errand", Kind: broker.KindAgent,
		SPIFFE: &SPIFFE{TrustDomain: "example.org", EndpointURL: srv.URL, EndpointRoots: roots, RefreshEvery: time.Minute},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok := svid(t, td.keys["k1"], agent7, nil)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	advance(2 * time.Minute)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("within three refresh periods of the last fetch: %v", err)
	}
	advance(2 * time.Minute)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("past three refresh periods: %v", err)
	}
}

// A Workload API that is not there answers 503 within the wait, never
// hangs the request, and never passes for an invalid token.
func TestSPIFFEWorkloadAPIDown(t *testing.T) {
	td := newTD(t, "example.org", "k1")
	v, err := New(Config{Self: "https://errand.test", Issuers: []Issuer{{
		Audience: "errand", Kind: broker.KindAgent,
		SPIFFE: &SPIFFE{TrustDomain: "example.org", WorkloadAPISocket: filepath.Join(t.TempDir(), "agent.sock")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	start := time.Now()
	for range 2 {
		if _, err := v.Verify(context.Background(), svid(t, td.keys["k1"], agent7, nil)); !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("no agent: %v", err)
		}
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("two verifications took %s", d)
	}
}

// X.509-SVIDs, verified with go-spiffe's x509svid against the X.509
// authorities of a SPIFFE bundle file: a leaf of the trust domain's CA is
// the agent; a leaf outside subjects, of an unknown CA, or presented to an
// issuer without X509SVID is refused; an OIDC JWKS has no X.509 authorities.
func TestSPIFFEX509SVID(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{td.ID().URL()}}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(id string, signer *ecdsa.PrivateKey, parent *x509.Certificate) []*x509.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u, _ := url.Parse(id)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
		if parent == nil {
			parent, signer = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return []*x509.Certificate{c}
	}
	b := spiffebundle.New(td)
	b.AddX509Authority(ca)
	raw, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bundle.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	newV := func(s *SPIFFE) *Verifier {
		v, err := New(Config{Self: "https://errand.test", Issuers: []Issuer{{Audience: "errand", Kind: broker.KindAgent,
			Subjects: []string{"spiffe://example.org/ns/agents/**"}, SPIFFE: s}}})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ctx := context.Background()
	v := newV(&SPIFFE{TrustDomain: "example.org", File: path, X509SVID: true})
	p, err := v.VerifyX509SVID(ctx, leaf(agent7, caKey, ca))
	if err != nil || p.Subject != agent7 || p.Issuer != "spiffe://example.org" || p.Kind != broker.KindAgent {
		t.Fatalf("%+v %v", p, err)
	}
	for why, chain := range map[string][]*x509.Certificate{
		"outside subjects":  leaf("spiffe://example.org/ns/payments/x", caKey, ca),
		"self-signed":       leaf(agent7, nil, nil),
		"other domain":      leaf("spiffe://other.org/ns/agents/x", caKey, ca),
		"the CA as a leaf":  {ca},
		"no URI SAN at all": leaf("https://example.org/x", caKey, ca),
	} {
		if _, err := v.VerifyX509SVID(ctx, chain); !errors.Is(err, broker.ErrInvalidToken) {
			t.Errorf("%s: %v", why, err)
		}
	}
	if _, err := newV(&SPIFFE{TrustDomain: "example.org", File: path}).VerifyX509SVID(ctx, leaf(agent7, caKey, ca)); !errors.Is(err, broker.ErrInvalidToken) {
		t.Errorf("without X509SVID: %v", err)
	}
	idp := testoidc.New(t)
	if _, err := newV(&SPIFFE{TrustDomain: "example.org", OIDCDiscoveryURL: idp.URL, X509SVID: true}).VerifyX509SVID(ctx, leaf(agent7, caKey, ca)); !errors.Is(err, broker.ErrInvalidToken) {
		t.Errorf("an OIDC JWKS has no X.509 authorities: %v", err)
	}
}
