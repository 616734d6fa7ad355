package broker

import (
	"net/url"
	"strings"
	"testing"
)

func resourceCatalog(t testing.TB) *Catalog {
	t.Helper()
	c, err := NewCatalog([]Action{{Name: "github.repo.read", Class: ClassRead, Risk: RiskLow}},
		[]Audience{{URL: "https://api.github.com"}, {URL: "https://staging-api.example.com/v1"},
			{URL: "http://localhost:9000"}, {URL: "https://api.example.com:8443/orders"}},
		nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestX04ResourceNormalisation: the spellings of one URL that RFC 3986 §6
// calls equivalent name the same configured audience; every trick that
// could name another one (userinfo, dot segments, a query, a fragment, a
// backslash, another port or path) is invalid_target.
func TestX04ResourceNormalisation(t *testing.T) {
	c := resourceCatalog(t)
	tests := []struct {
		name, in, want string // want "" means invalid_target
	}{
		{"exact", "https://api.github.com", "https://api.github.com"},
		{"trailing slash of an empty path", "https://api.github.com/", "https://api.github.com"},
		{"host case", "https://API.GitHub.com", "https://api.github.com"},
		{"scheme case", "HTTPS://api.github.com", "https://api.github.com"},
		{"default port", "https://api.github.com:443/", "https://api.github.com"},
		{"default port, empty", "https://api.github.com:/", "https://api.github.com"},
		{"http default port", "http://localhost:80", ""},
		{"http other port", "http://LOCALHOST:9000/", "http://localhost:9000"},
		{"port with a leading zero", "https://api.example.com:08443/orders", "https://api.example.com:8443/orders"},
		{"encoded unreserved", "https://staging-api.example.com/%76%31", "https://staging-api.example.com/v1"},
		{"path kept as configured", "https://staging-api.example.com/v1", "https://staging-api.example.com/v1"},
		{"path trailing slash is another path", "https://staging-api.example.com/v1/", ""},
		{"path case is significant", "https://staging-api.example.com/V1", ""},
		{"dot-dot", "https://staging-api.example.com/v2/../v1", ""},
		{"encoded dot-dot", "https://staging-api.example.com/v2/%2e%2e/v1", ""},
		{"dot", "https://staging-api.example.com/./v1", ""},
		{"userinfo", "https://api.github.com@evil.example/", ""},
		{"userinfo on the right host", "https://user@api.github.com", ""},
		{"fragment", "https://api.github.com#x", ""},
		{"empty fragment", "https://api.github.com#", ""},
		{"query", "https://api.github.com?aud=https://evil.example", ""},
		{"empty query", "https://api.github.com?", ""},
		{"backslash", "https://api.github.com\\@evil.example", ""},
		{"another scheme", "http://api.github.com", ""},
		{"another port", "https://api.github.com:8443", ""},
		{"space", "https://api.github.com /", ""},
		{"relative", "//api.github.com", ""},
		{"no scheme", "api.github.com", ""},
		{"opaque", "https:api.github.com", ""},
		{"task id smuggled", "tsk_aaaaaaaaaaaaaaaaaaaaaaaaaa", ""},
		{"port out of range", "https://api.github.com:70000", ""},
		{"trailing dot host", "https://api.github.com.", ""},
		{"unknown", "https://evil.example", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.ResolveResource(tt.in)
			if tt.want == "" {
				if err == nil || CodeOf(err) != "invalid_target" {
					t.Fatalf("ResolveResource(%q) = %q, %v; want invalid_target", tt.in, got, err)
				}
				if strings.Contains(RefusalDetail(err), tt.in) && tt.in != "" {
					t.Errorf("the refusal quotes the input: %q", RefusalDetail(err))
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveResource(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestResolveResourceRefusesAmbiguousConfig: two configured spellings of
// one URL are never guessed between.
func TestResolveResourceRefusesAmbiguousConfig(t *testing.T) {
	c, err := NewCatalog(nil, []Audience{{URL: "https://a.example"}, {URL: "https://a.example/"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.ResolveResource("https://a.example"); CodeOf(err) != "invalid_target" {
		t.Fatalf("ResolveResource = %q, %v; want invalid_target", got, err)
	}
}

// FuzzResourceNormalise: normalising is idempotent, and a resource that
// resolves names the configured audience with the same scheme, host (any
// case), effective port and path, as read by net/url independently: no
// input maps to a different configured audience.
func FuzzResourceNormalise(f *testing.F) {
	for _, s := range []string{"https://api.github.com", "https://API.github.com:443/", "http://localhost:9000",
		"https://staging-api.example.com/%76%31", "https://a@api.github.com", "https://api.github.com/../x",
		"https://[::1]:8443/a", "https://api.example.com:08443/orders", "https://api.github.com:/", "HTTPS://x/%2F"} {
		f.Add(s)
	}
	c := resourceCatalog(f)
	f.Fuzz(func(t *testing.T, in string) {
		n, err := NormaliseResource(in)
		if err != nil {
			if CodeOf(err) != "invalid_target" {
				t.Fatalf("NormaliseResource(%q) failed with code %q", in, CodeOf(err))
			}
			if _, rerr := c.ResolveResource(in); rerr == nil {
				t.Fatalf("%q does not normalise but resolves", in)
			}
			return
		}
		again, err := NormaliseResource(n)
		if err != nil || again != n {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, n, again, err)
		}
		aud, err := c.ResolveResource(in)
		if err != nil {
			return
		}
		got, err1 := url.Parse(in)
		want, err2 := url.Parse(aud)
		if err1 != nil || err2 != nil {
			t.Fatalf("%q resolved to %q, yet net/url cannot parse one of them", in, aud)
		}
		if !strings.EqualFold(got.Scheme, want.Scheme) || !strings.EqualFold(got.Hostname(), want.Hostname()) ||
			effectivePort(got) != effectivePort(want) || trimEmpty(got.Path) != trimEmpty(want.Path) ||
			got.User != nil || got.RawQuery != "" || got.Fragment != "" {
			t.Fatalf("%q resolved to %q, a different URL", in, aud)
		}
	})
}

func effectivePort(u *url.URL) string {
	if p := strings.TrimLeft(u.Port(), "0"); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

func trimEmpty(p string) string {
	if p == "/" {
		return ""
	}
	return p
}
