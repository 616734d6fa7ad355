package httpapi

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"golang.org/x/time/rate"
)

func TestAddressKeyGroupsIPv6By64(t *testing.T) {
	cases := map[string]string{
		"192.0.2.7:4242":             "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:80":      "192.0.2.7",
		"not-an-address":             "not-an-address",
	}
	s := &Server{}
	for in, want := range cases {
		if got := s.addressKey(&http.Request{RemoteAddr: in}); got != want {
			t.Errorf("addressKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestR01ClientAddressFromTrustedProxiesOnly: X-Forwarded-For is read only
// when the TCP peer is a trusted proxy, and then the client is the
// rightmost hop that is not itself trusted: what a client writes to the
// left of it (a spoofed hop) is never believed.
func TestR01ClientAddressFromTrustedProxiesOnly(t *testing.T) {
	s := &Server{proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}}
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer: header ignored", "198.51.100.1:5000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted peer, one hop", "127.0.0.1:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"spoofed hop left of the real client", "127.0.0.1:5000", []string{"6.6.6.6, 203.0.113.9"}, "203.0.113.9"},
		{"chain of trusted proxies", "10.1.1.1:5000", []string{"6.6.6.6, 203.0.113.9, 10.2.2.2"}, "203.0.113.9"},
		{"several header lines", "127.0.0.1:5000", []string{"6.6.6.6", "203.0.113.9, 10.0.0.3"}, "203.0.113.9"},
		{"every hop trusted: the leftmost", "127.0.0.1:5000", []string{"10.0.0.8, 10.0.0.9"}, "10.0.0.8"},
		{"garbage ends the walk at the last trusted hop", "127.0.0.1:5000", []string{"203.0.113.9, not-an-ip, 10.0.0.4"}, "10.0.0.4"},
		{"no header: the proxy itself", "127.0.0.1:5000", nil, "127.0.0.1"},
		{"IPv6 client behind the proxy", "127.0.0.1:5000", []string{"2001:db8::7"}, "2001:db8::7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			r.Header.Set("X-Real-IP", "9.9.9.9") // never read
			if got := s.clientAddr(r); got.String() != c.want {
				t.Fatalf("clientAddr = %s, want %s", got, c.want)
			}
		})
	}
}

// TestR02FullTableNeverRefusesANewKey: with the table full, a key never
// seen gets a bucket of its own (the least recently used one is dropped),
// and a key used recently keeps its bucket, emptied or not.
func TestR02FullTableNeverRefusesANewKey(t *testing.T) {
	ls := newLimiters(1) // burst 2
	ls.max = 100
	for i := 0; i < 100; i++ {
		ls.allow(fmt.Sprintf("flood-%d", i))
	}
	ls.allow("busy")
	ls.allow("busy")
	if ok, _ := ls.allow("busy"); ok {
		t.Fatal("test bug: busy's bucket is not empty")
	}
	for i := 100; i < 300; i++ { // the flood goes on with new keys
		if ok, _ := ls.allow(fmt.Sprintf("flood-%d", i)); !ok {
			t.Fatalf("new key flood-%d refused by a full table", i)
		}
		if i%50 == 0 {
			ls.allow("busy") // busy stays recently used
		}
	}
	if ok, d := ls.allow("newcomer"); !ok {
		t.Fatalf("a new client was refused by a full table (retry in %v)", d)
	}
	if len(ls.buckets) != 100 || ls.lru.Len() != 100 {
		t.Fatalf("table holds %d buckets (%d in the list), want its cap of 100", len(ls.buckets), ls.lru.Len())
	}
	if ok, _ := ls.allow("busy"); ok {
		t.Fatal("a recently used key's emptied bucket was reset by the flood")
	}
}

// TestR02FullAddressTableStillServesANewClient: the same through the
// server: an anonymous flood from more addresses than the table holds,
// then a new client is served.
func TestR02FullAddressTableStillServesANewClient(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: RateLimits{PerAddress: 1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}})
	e.api.byAddress.max = 50
	for i := 0; i < 120; i++ {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		if r := e.send(req, nil); r.Status == http.StatusTooManyRequests {
			t.Fatalf("flood request %d from a new address answered 429", i)
		}
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.50")
	if r := e.send(req, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("a new client after the flood: %d %s", r.Status, r.Raw)
	}
}

// TestR01AnonymousFloodNeverRefusesAnAgent: behind a proxy (the test
// client, on loopback, trusted), an anonymous flood exhausts its own
// address's bucket; an agent elsewhere mints, and so does an agent that
// shares the flood's very address: authenticated requests are charged to
// their principal, never to the anonymous traffic of an address.
func TestR01AnonymousFloodNeverRefusesAnAgent(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: RateLimits{PerAddress: 2,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}})
	id := e.approved("r01-agent", "alice", "github.repo.read:acme/**")
	throttled := 0
	for i := 0; i < 40; i++ {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
		req.Header.Set("X-Forwarded-For", "198.51.100.7")
		if e.send(req, nil).Status == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled < 30 {
		t.Fatalf("only %d of 40 flood requests throttled: the flood was not limited", throttled)
	}
	for _, from := range []string{"203.0.113.9", "198.51.100.7"} {
		raw := []byte(`{"scopes":["github.repo.read:acme/api"],"audience":"` + apiGitHub + `"}`)
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/tasks/"+id+"/tokens", bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+e.agent("r01-agent"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", from)
		if r := e.send(req, raw); r.Status != http.StatusCreated {
			t.Fatalf("agent's mint from %s after the flood: %d %s", from, r.Status, r.Raw)
		}
	}
}

// TestR01AddressLimiterOff: with the address limiter turned off (a front
// proxy limits), an anonymous flood is never throttled by Errand.
func TestR01AddressLimiterOff(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: RateLimits{PerAddress: rate.Inf}})
	for i := 0; i < 50; i++ {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
		if r := e.send(req, nil); r.Status == http.StatusTooManyRequests {
			t.Fatalf("request %d throttled with the address limiter off", i)
		}
	}
}
