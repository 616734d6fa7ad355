package broker

import (
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// maxResourceBytes caps a resource indicator.
const maxResourceBytes = 2048

// NormaliseResource returns the RFC 3986 §6.2.2 normal form of an RFC 8707
// resource indicator (or an RFC 8693 audience written as a URL), so that
// the ways of writing one URL compare equal: scheme and host in lower
// case, the scheme's default port dropped, percent-encodings of unreserved
// characters decoded and the others in upper case, and an empty path
// written as none ("https://api.example.com/" is "https://api.example.com").
//
// What could make one audience pass for another is refused, never
// repaired: a relative or opaque URI, userinfo, a query or a fragment
// (RFC 8707 §2: "MUST NOT include a fragment component"; a query "SHOULD
// NOT"), dot segments (plain or percent-encoded), a backslash, spaces or
// control characters, an empty host or an invalid port. Every refusal is
// ErrInvalidTarget. NormaliseResource is idempotent.
func NormaliseResource(raw string) (string, error) {
	bad := func() (string, error) {
		return "", Errorf(ErrInvalidTarget, "resource is not an absolute URL Errand accepts")
	}
	if raw == "" || len(raw) > maxResourceBytes || strings.ContainsAny(raw, "#?\\@") {
		return bad()
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= 0x20 || c >= 0x7f {
			return bad()
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil || u.Host == "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return bad()
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme == "" || !strings.HasPrefix(raw[len(u.Scheme):], "://") {
		return bad()
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if !validHost(host) {
		return bad()
	}
	if strings.Contains(host, ":") { // an IPv6 literal, in RFC 5952 form
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" || !strings.HasPrefix(u.Host, "[") {
			return bad()
		}
		host = "[" + a.String() + "]"
	}
	if strings.HasSuffix(u.Host, ":") {
		port = "" // "https://host:/" has the default port (RFC 3986 §3.2.3)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return bad()
		}
		if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
			port = ""
		} else {
			port = strconv.Itoa(n)
		}
	}
	path, ok := normalisePath(u.EscapedPath())
	if !ok {
		return bad()
	}
	out := scheme + "://" + host
	if port != "" {
		out += ":" + port
	}
	return out + path, nil
}

// normalisePath decodes percent-encoded unreserved characters, writes the
// other percent-encodings in upper case, drops the "/" of an otherwise
// empty path and refuses dot segments.
func normalisePath(p string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", false
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		if unreserved(v) {
			b.WriteByte(v)
		} else {
			b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
		}
		i += 2
	}
	out := b.String()
	for _, seg := range strings.Split(out, "/") {
		if seg == "." || seg == ".." {
			return "", false
		}
	}
	if out == "/" {
		out = ""
	}
	return out, true
}

// validHost admits a DNS name or an IPv4 address (letters, digits, "-"
// and "."), or an IPv6 literal (hex digits, ":" and "."), in lower case.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	v6 := strings.Contains(h, ":")
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= '0' && c <= '9', c == '.':
		case v6 && (c >= 'a' && c <= 'f' || c == ':'):
		case !v6 && (c >= 'a' && c <= 'z' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// unreserved is RFC 3986 §2.3's unreserved set.
func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// ResolveResource returns the configured audience that resource indicator
// raw names: the one whose normal form is raw's (NormaliseResource), or
// ErrInvalidTarget (X04). The configured spelling is returned, so that
// tokens always carry the audience as configured.
func (c *Catalog) ResolveResource(raw string) (string, error) {
	want, err := NormaliseResource(raw)
	if err != nil {
		return "", err
	}
	found := ""
	for aud := range c.audiences {
		if n, err := NormaliseResource(aud); err == nil && n == want {
			if found != "" {
				// Two configured spellings of one URL: naming either
				// would be a guess.
				return "", Errorf(ErrInvalidTarget, "resource matches more than one configured audience")
			}
			found = aud
		}
	}
	if found == "" {
		return "", Errorf(ErrInvalidTarget, "resource is not a configured audience")
	}
	return found, nil
}
