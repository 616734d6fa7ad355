package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestServeMountsTheApprovalPages: errand serve (PostgreSQL) serves the
// pages under /ui/ behind the sign-in, with their headers, and the REST
// API beside them.
func TestServeMountsTheApprovalPages(t *testing.T) {
	cfg, _, _, _ := loadServeConfig(t)
	addr, _ := startServe(t, cfg, nil)
	base := "http://" + addr
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(method, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(url.Values{"mode": {"all"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	id := "tsk_" + strings.Repeat("a", 26)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/ui/"}, {"GET", "/ui/tasks/" + id}, {"GET", "/ui/history"}, {"POST", "/ui/tasks/" + id + "/approve"},
	} {
		res := get(tc.method, tc.path)
		if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login?return_to=") {
			t.Errorf("%s %s without a session: %d %s", tc.method, tc.path, res.StatusCode, res.Header.Get("Location"))
		}
		if !strings.Contains(res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") || res.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s %s headers: %v", tc.method, tc.path, res.Header)
		}
	}
	if res := get("GET", "/ui/static/style.css"); res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if res := get("GET", "/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("the API beside the pages: %d", res.StatusCode)
	}
}
