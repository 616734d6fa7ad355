package httpapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/client"
	"github.com/errandhq/errand/identity"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/internal/testing/testspire"
)

// TestSPIFFEWithSPIRE runs Errand against a real SPIRE v1.13.3: a server
// and an agent on loopback (join_token node attestation, the unix
// workload attestor), the test process registered by its uid. The agent
// fetches its JWT-SVID over the Workload API with go-spiffe (the Go
// client's token source) and runs the whole flow with it; Errand follows
// the trust domain's bundle over the same Workload API. Then SVIDs that
// must be refused, minted by SPIRE itself: another trust domain's, one for
// another audience, one whose SPIFFE ID is outside subjects; the bundle
// from SPIRE's bundle endpoint (https_spiffe) and from a `bundle show`
// file; and a rotation of SPIRE's JWT authority (prepare, activate, taint,
// revoke): the new key accepted, the revoked one refused; and an SVID
// minted to live 1 s, refused once it has expired (go-spiffe allows go-jose's
// one minute of leeway, so the test waits that out at its end).
func TestSPIFFEWithSPIRE(t *testing.T) {
	testspire.Require(t)
	ctx := context.Background()
	srv := testspire.StartServer(t, "example.org", testpg.NewDatabase(t))
	agentID := srv.ID("/ns/agents/sa/agent-7")
	shortLived, shortExp := srv.MintTTL(t, agentID, audience, time.Second), time.Now().Add(time.Second)
	agent := srv.StartAgent(t)
	other := testspire.StartServer(t, "other.org", testpg.NewDatabase(t))
	srv.RegisterUID(t, agentID, os.Getuid())
	agent.FetchJWTSVID(t, audience) // waits for the entry to reach the agent

	e := newEnvWith(t, envOptions{
		spiffe:         &identity.SPIFFE{TrustDomain: "example.org", WorkloadAPISocket: agent.Socket, X509SVID: true},
		spiffeSubjects: []string{"spiffe://example.org/ns/agents/**"},
	})

	token, closeSource, err := client.SPIFFETokenSource(ctx, agent.Addr(), audience)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSource()
	svid, err := token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The whole flow with the JWT-SVID: create, approve, mint, close.
	r := e.mustStatus(e.do("POST", "/v1/tasks", svid, map[string]any{
		"on_behalf_of": "alice", "goal": "triage issues", "scopes": []string{"github.repo.read:acme/api"},
		"audiences": []string{apiGitHub}, "ttl_seconds": 600,
	}), http.StatusCreated)
	id := r.str("id")
	if r.str("agent") != agentID {
		t.Fatalf("the task's agent is written as its SPIFFE ID: %s", r.Raw)
	}
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	minted := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", svid, map[string]any{
		"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub,
	}), http.StatusCreated)
	claims := accessClaims(t, minted.str("access_token"))
	act, _ := claims["act"].(map[string]any)
	if claims["client_id"] != agentID || act["sub"] != agentID || act["iss"] != "spiffe://example.org" || claims["sub"] != "alice" {
		t.Fatalf("the access token names the agent by its SPIFFE ID: %v", claims)
	}
	closed := e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/close", svid, nil), http.StatusOK)
	if closed.str("status") != "closed" || closed.JSON["revoked"].(float64) != 1 {
		t.Fatalf("close: %s", closed.Raw)
	}

	newTask := map[string]any{"on_behalf_of": "alice", "goal": "g", "scopes": []string{"github.repo.read:acme/api"},
		"audiences": []string{apiGitHub}, "ttl_seconds": 600}

	// X.509-SVID: mutual TLS with the agent's X.509-SVID (from the
	// Workload API) as client certificate and no Authorization header is
	// the same agent; a self-signed certificate naming the same SPIFFE ID
	// is refused.
	xsvid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(agent.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := xsvid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	r = mtls(t, e, pair, newTask)
	if r.Status != http.StatusCreated || r.str("agent") != agentID {
		t.Fatalf("an X.509-SVID over mutual TLS: %d %s", r.Status, r.Raw)
	}
	before := e.snapshot()
	r = mtls(t, e, selfSignedSVID(t, agentID), newTask)
	e.refused(before, r, http.StatusUnauthorized, "invalid_token")
	before = e.snapshot()
	r = mtls(t, e, selfSignedSVID(t, other.ID("/ns/agents/sa/agent-7")), newTask)
	e.refused(before, r, http.StatusUnauthorized, "invalid_token")
	refuse := func(tok, why string) {
		t.Helper()
		before := e.snapshot()
		r := e.do("POST", "/v1/tasks", tok, newTask)
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("%s: %d %s", why, r.Status, r.Raw)
		}
		e.refused(before, r, http.StatusUnauthorized, "invalid_token")
	}
	// Another trust domain: a second SPIRE server of other.org.
	refuse(other.Mint(t, other.ID("/ns/agents/sa/agent-7"), audience), "another trust domain's SVID")
	refuse(srv.Mint(t, agentID, "other-service"), "an SVID for another audience")
	refuse(srv.Mint(t, srv.ID("/ns/payments/sa/agent-7"), audience), "a SPIFFE ID outside subjects")
	// A minted SVID of a SPIFFE ID inside subjects is accepted: the
	// refusals above are for their reason alone.
	e.mustStatus(e.do("POST", "/v1/tasks", srv.Mint(t, srv.ID("/ns/agents/sa/agent-8"), audience), newTask), http.StatusCreated)

	// The same trust domain's bundle from SPIRE's bundle endpoint
	// (https_spiffe, authenticated with a bundle shown by the server) and
	// from a `bundle show -format spiffe` file.
	bootstrap := srv.BundleFile(t, "bootstrap.json")
	for name, s := range map[string]*identity.SPIFFE{
		"bundle endpoint": {TrustDomain: "example.org", EndpointURL: srv.BundleEndpoint,
			EndpointSPIFFEID: srv.ID("/spire/server"), BootstrapFile: bootstrap},
		"bundle file": {TrustDomain: "example.org", File: bootstrap},
	} {
		v, err := identity.New(identity.Config{Self: publicURL, Issuers: []identity.Issuer{{Audience: audience, Kind: broker.KindAgent, SPIFFE: s}}})
		if err != nil {
			t.Fatal(err)
		}
		p, err := v.Verify(ctx, svid)
		if err != nil || p.Subject != agentID {
			t.Fatalf("%s: %+v %v", name, p, err)
		}
		// X.509-SVIDs only where the issuer takes them.
		if _, err := v.VerifyX509SVID(ctx, xsvid.Certificates); !errors.Is(err, broker.ErrInvalidToken) {
			t.Fatalf("%s: an X.509-SVID without x509_svid: %v", name, err)
		}
		s.X509SVID = true
		if v, err = identity.New(identity.Config{Self: publicURL, Issuers: []identity.Issuer{{Audience: audience, Kind: broker.KindAgent, SPIFFE: s}}}); err != nil {
			t.Fatal(err)
		}
		if p, err := v.VerifyX509SVID(ctx, xsvid.Certificates); err != nil || p.Subject != agentID {
			t.Fatalf("%s: an X.509-SVID: %+v %v", name, p, err)
		}
		if _, err := v.Verify(ctx, other.Mint(t, other.ID("/x"), audience)); !errors.Is(err, broker.ErrInvalidToken) {
			t.Fatalf("%s: another trust domain's SVID: %v", name, err)
		}
	}

	// Rotation of SPIRE's JWT authority.
	old := authority(t, srv, "active")
	srv.LocalAuthority(t, "prepare")
	next := authority(t, srv, "prepared")
	srv.LocalAuthority(t, "activate", "-authorityID", next)
	fresh := srv.Mint(t, agentID, audience)
	if kid(t, fresh) != next || kid(t, svid) != old {
		t.Fatalf("kids: old SVID %s (authority %s), new SVID %s (authority %s)", kid(t, svid), old, kid(t, fresh), next)
	}
	eventually(t, "the new key accepted", func() bool {
		return e.do("POST", "/v1/tasks", fresh, newTask).Status == http.StatusCreated
	})
	e.mustStatus(e.do("POST", "/v1/tasks", svid, newTask), http.StatusCreated) // the old key stays until revoked
	srv.LocalAuthority(t, "taint", "-authorityID", old)
	srv.LocalAuthority(t, "revoke", "-authorityID", old)
	eventually(t, "the revoked key refused", func() bool {
		return e.do("POST", "/v1/tasks", svid, newTask).Status == http.StatusUnauthorized
	})
	refuse(svid, "an SVID of the revoked key")
	e.mustStatus(e.do("POST", "/v1/tasks", fresh, newTask), http.StatusCreated)

	// The 1 s SVID (of the revoked key too, so refused either way until
	// the agent's bundle holds the key again: checked with a bundle file
	// of the key's time, saved before the rotation, so only expiry refuses it).
	time.Sleep(time.Until(shortExp.Add(time.Minute + 2*time.Second)))
	v, err := identity.New(identity.Config{Self: publicURL, Issuers: []identity.Issuer{{Audience: audience, Kind: broker.KindAgent,
		SPIFFE: &identity.SPIFFE{TrustDomain: "example.org", File: bootstrap}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, svid); err != nil {
		t.Fatalf("the bundle file of the old key: %v", err)
	}
	if _, err := v.Verify(ctx, shortLived); !errors.Is(err, broker.ErrInvalidToken) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired SVID of SPIRE: %v", err)
	}
}

// authority is the ID of SPIRE's JWT authority in state (active,
// prepared, old), from `localauthority jwt show -output json`.
func authority(t *testing.T, srv *testspire.Server, state string) string {
	t.Helper()
	var out map[string]map[string]any
	if err := json.Unmarshal([]byte(srv.LocalAuthority(t, "show", "-output", "json")), &out); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"authority_id", "authorityId"} {
		if id, ok := out[state][k].(string); ok && id != "" {
			return id
		}
	}
	t.Fatalf("no %s JWT authority: %v", state, out)
	return ""
}

func kid(t *testing.T, tok string) string {
	t.Helper()
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.ES384, jose.PS256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

func accessClaims(t *testing.T, at string) map[string]any {
	t.Helper()
	jws, err := jose.ParseSigned(at, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 90 s", what)
		}
		time.Sleep(time.Second)
	}
}

// mtls posts body to /v1/tasks over mutual TLS with cert as the client
// certificate and no Authorization header.
func mtls(t *testing.T, e *env, cert tls.Certificate, body any) resp {
	t.Helper()
	ts := httptest.NewUnstartedServer(e.api)
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	defer ts.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", ts.URL+"/v1/tasks", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := resp{Status: res.StatusCode, Header: res.Header}
	out.Raw, _ = io.ReadAll(res.Body)
	_ = json.Unmarshal(out.Raw, &out.JSON)
	checkContract(t, req, raw, res.StatusCode, res.Header, out.Raw)
	return out
}

// selfSignedSVID is a certificate shaped as an X.509-SVID of id (URI SAN,
// digital-signature leaf) that no trust domain's authority signed.
func selfSignedSVID(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
