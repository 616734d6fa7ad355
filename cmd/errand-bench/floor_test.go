package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The floor server answers what the introspect scenario expects of Errand,
// so that its figures are of the same request and answer.
func TestFloorAnswersLikeAnActiveIntrospection(t *testing.T) {
	srv := httptest.NewServer(floorHandler())
	defer srv.Close()
	post := func(body string) *http.Response {
		t.Helper()
		res, err := http.Post(srv.URL+"/v1/introspect", "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	res := post("token=eyJhbGciOiJFZERTQSJ9.e30.c2ln")
	var got map[string]any
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || got["active"] != true || got["scope"] == "" || got["exp"] == nil {
		t.Fatalf("status %d, answer %v", res.StatusCode, got)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if res := post("token_type_hint=access_token"); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("no token: status %d, want 400", res.StatusCode)
	}
}
