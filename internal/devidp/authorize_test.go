package devidp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// TestCodeFlow drives the user issuer's code flow with golang.org/x/oauth2
// and go-oidc as the client: a code works once, only with its verifier and
// redirect URI; the ID token carries the nonce and verifies; the refresh
// token rotates; a redirect URI off Errand's origin and loopback is
// refused before any page.
func TestCodeFlow(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	p, err := New(srv.URL, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/dev/", p.Handler())
	ctx := context.Background()
	op, err := oidc.NewProvider(ctx, p.IssuerURL("user"))
	if err != nil {
		t.Fatal(err)
	}
	oc := &oauth2.Config{ClientID: Audience, Endpoint: op.Endpoint(), RedirectURL: "http://127.0.0.1:9/callback", Scopes: []string{"openid"}}
	oc.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code := func(verifier, nonce string) string {
		t.Helper()
		authz, _ := url.Parse(oc.AuthCodeURL("st", oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)))
		form := authz.Query()
		form.Set("sub", "alice")
		form.Set("groups", "eng, auditors")
		res, err := noFollow.PostForm(p.IssuerURL("user")+"/authorize", form)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		back, err := url.Parse(res.Header.Get("Location"))
		if err != nil || res.StatusCode != http.StatusSeeOther || back.Query().Get("state") != "st" || back.Query().Get("iss") != p.IssuerURL("user") {
			t.Fatalf("authorize: %d %s", res.StatusCode, res.Header.Get("Location"))
		}
		return back.Query().Get("code")
	}
	verifier := oauth2.GenerateVerifier()
	c := code(verifier, "n-1")
	if _, err := oc.Exchange(ctx, c, oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("another verifier: %v", err)
	}
	c = code(verifier, "n-1")
	other := *oc
	other.RedirectURL = "http://127.0.0.1:9/other"
	if _, err := other.Exchange(ctx, c, oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("another redirect_uri accepted")
	}
	c = code(verifier, "n-1")
	tok, err := oc.Exchange(ctx, c, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Exchange(ctx, c, oauth2.VerifierOption(verifier)); err == nil {
		t.Fatal("a code worked twice")
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := op.Verifier(&oidc.Config{ClientID: Audience, SupportedSigningAlgs: []string{oidc.EdDSA}}).Verify(ctx, raw)
	if err != nil || idt.Nonce != "n-1" || idt.Subject != "alice" {
		t.Fatalf("id token: %v %+v", err, idt)
	}
	var claims struct{ Groups []string }
	if err := idt.Claims(&claims); err != nil || strings.Join(claims.Groups, ",") != "eng,auditors" {
		t.Fatalf("groups %v %v", claims.Groups, err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	next, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil || next.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v", err)
	}
	if _, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Fatal("a used refresh token worked again")
	}
	for _, redirect := range []string{"https://evil.example/cb", "http://10.0.0.1:8080/cb", "http://127.0.0.1:9/cb#frag"} {
		bad := *oc
		bad.RedirectURL = redirect
		res, err := noFollow.Get(bad.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("redirect_uri %s: %d", redirect, res.StatusCode)
		}
	}
}
