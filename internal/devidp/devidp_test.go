package devidp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
)

func TestTokensVerifyWithTheIssuersDiscovery(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	p, err := New(srv.URL, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/dev/", p.Handler())
	ctx := context.Background()
	for _, kind := range Kinds {
		tok, err := p.Issue(TokenRequest{Kind: kind, Sub: "x", Groups: []string{"eng"}})
		if err != nil {
			t.Fatal(err)
		}
		prov, err := oidc.NewProvider(ctx, p.IssuerURL(kind))
		if err != nil {
			t.Fatalf("%s discovery: %v", kind, err)
		}
		idt, err := prov.Verifier(&oidc.Config{ClientID: Audience, SupportedSigningAlgs: []string{oidc.EdDSA}}).Verify(ctx, tok)
		if err != nil || idt.Subject != "x" {
			t.Fatalf("%s: %v", kind, err)
		}
		// A token of one kind never verifies as another kind's issuer.
		other := Kinds[(indexOf(kind)+1)%len(Kinds)]
		prov2, _ := oidc.NewProvider(ctx, p.IssuerURL(other))
		if _, err := prov2.Verifier(&oidc.Config{ClientID: Audience}).Verify(ctx, tok); err == nil {
			t.Fatalf("%s token verified by the %s issuer", kind, other)
		}
	}
}

func indexOf(k string) int {
	for i, x := range Kinds {
		if x == k {
			return i
		}
	}
	return -1
}

func TestTokenEndpointRefusesBadRequests(t *testing.T) {
	p, _ := New("http://127.0.0.1", make([]byte, 32))
	h := p.Handler()
	for name, body := range map[string]string{
		"unknown kind":  `{"kind":"admin","sub":"x"}`,
		"missing sub":   `{"kind":"agent"}`,
		"unknown field": `{"kind":"agent","sub":"x","aud":"other"}`,
		"long sub":      `{"kind":"agent","sub":"` + strings.Repeat("x", 300) + `"}`,
		"not JSON":      `kind=agent`,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/dev/token", strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"code":"invalid_request"`) {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
	if _, err := New("http://x", []byte("short")); err == nil {
		t.Error("short seed accepted")
	}
}
