package dpop

import (
	"errors"
	"net/url"
	"strings"
)

// normalize is the form in which htu and the request's URL are compared
// (RFC 9449 §4.3 step 9): without query and fragment, after RFC 3986
// §6.2.2 syntax-based normalisation (scheme and host in lower case,
// percent-encodings in upper case, unreserved characters decoded) and
// §6.2.3 scheme-based normalisation (no default port, an empty path is
// "/"). Only absolute http and https URLs have a form.
func normalize(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", errors.New("not an absolute http or https URL")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path, err := normalizePath(u.EscapedPath())
	if err != nil {
		return "", err
	}
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// normalizePath writes every percent-encoding in upper case and decodes
// those of unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2).
func normalizePath(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", errors.New("a malformed percent-encoding")
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if unreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteString(strings.ToUpper(p[i : i+3]))
		}
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
