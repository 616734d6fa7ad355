package notify_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/errandhq/errand/notify"
)

// FuzzCheckURL: whatever the input, an accepted webhook URL is https, or
// http to a loopback host; carries no credentials; and, when its host is
// an address, that address is neither link-local, unspecified nor
// multicast, nor loopback behind https to a name, nor private.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.com/x", "http://127.0.0.1:9/x", "http://[::1]/", "http://localhost/",
		"https://169.254.169.254/", "https://[::ffff:a9fe:a9fe]/", "https://[64:ff9b::a9fe:a9fe]/", "http://0x7f.1/",
		"https://user@host/", "https://10.0.0.1/", "http://127.1/", "https://[fe80::1%25eth0]/", "HTTPS://EXAMPLE.COM",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := notify.CheckURL(raw, false)
		if err != nil {
			return
		}
		if u.User != nil {
			t.Fatalf("%q: accepted with credentials", raw)
		}
		host := u.Hostname()
		a, ipErr := netip.ParseAddr(host)
		switch u.Scheme {
		case "https":
		case "http":
			if !(ipErr == nil && a.Unmap().IsLoopback()) && !strings.HasSuffix(strings.TrimSuffix(strings.ToLower(host), "."), "localhost") {
				t.Fatalf("%q: http accepted to %q", raw, host)
			}
		default:
			t.Fatalf("%q: scheme %q accepted", raw, u.Scheme)
		}
		if ipErr == nil {
			a = a.Unmap()
			if a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() || a.IsPrivate() {
				t.Fatalf("%q: address %s accepted", raw, a)
			}
		}
	})
}

// FuzzParseSecrets: the secret-file parser never panics, accepts only
// whsec_ secrets of 24 to 64 bytes, and its errors never repeat the
// file's content.
func FuzzParseSecrets(f *testing.F) {
	f.Add("whsec_" + strings.Repeat("QUJD", 8))
	f.Add("# comment\n\nwhsec_!!\n")
	f.Add("whsec_\n")
	f.Fuzz(func(t *testing.T, raw string) {
		secrets, err := notify.ParseSecrets([]byte(raw))
		if err != nil {
			for _, line := range strings.Split(raw, "\n") {
				if l := strings.TrimSpace(line); strings.HasPrefix(l, "whsec_") && len(l) >= 12 && strings.Contains(err.Error(), l) {
					t.Fatalf("the error repeats the file: %v", err)
				}
			}
			return
		}
		for _, s := range secrets {
			if !strings.HasPrefix(s, "whsec_") {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}
