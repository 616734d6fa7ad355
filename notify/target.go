package notify

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Formats of a webhook's body.
const (
	FormatStandard = "standard"
	FormatSlack    = "slack"
)

// Target is one configured webhook.
type Target struct {
	// URL is where deliveries are posted; checked by CheckURL.
	URL *url.URL
	// Secrets are the Standard Webhooks secrets ("whsec_" + base64 of the
	// key); each signs every request (several while a key is rotated).
	Secrets []string
	// Events are the notice types the webhook subscribes to.
	Events []string
	// Format is FormatStandard (the default) or FormatSlack.
	Format string
	// AllowPrivate lets the webhook reach private addresses (RFC 1918,
	// RFC 6598, fc00::/7); off, they are refused like link-local ones.
	AllowPrivate bool
}

// Key names the webhook in the outbox, the audit trail, logs and metrics:
// a digest of its URL, never the URL (a Slack URL is itself a secret).
func (t Target) Key() string { return KeyOf(t.URL.String()) }

// KeyOf is the key of a webhook URL.
func KeyOf(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "wh_" + hex.EncodeToString(sum[:8])
}

// Redacted is how a webhook is shown: scheme and host, with its key.
func (t Target) Redacted() string { return t.URL.Scheme + "://" + t.URL.Host + " (" + t.Key() + ")" }

// CheckURL parses a webhook URL and refuses what it must never reach:
// a scheme other than https (or http to a loopback address), credentials
// in the URL, a fragment, and a host that is an address of a forbidden
// kind (see allowedAddr). A host name is checked again at every
// connection, on the address it resolved to.
func CheckURL(raw string, allowPrivate bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, errors.New("not an absolute URL")
	}
	if u.User != nil {
		return nil, errors.New("credentials in the URL are refused (the secret_file signs requests)")
	}
	if u.Fragment != "" {
		return nil, errors.New("a fragment is never sent; remove it")
	}
	host := u.Hostname()
	loop := isLoopbackHost(host)
	switch u.Scheme {
	case "https":
	case "http":
		if !loop {
			return nil, errors.New("http is allowed only to a loopback address (127.0.0.1, [::1], localhost); use https")
		}
	default:
		return nil, fmt.Errorf("scheme %q: use https (or http to a loopback address)", u.Scheme)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if err := allowedAddr(a, loop, allowPrivate); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// isLoopbackHost reports whether a URL's host names the loopback
// interface: a loopback address, or localhost.
func isLoopbackHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().IsLoopback()
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

var (
	cgnat  = netip.MustParsePrefix("100.64.0.0/10")
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	thisV4 = netip.MustParsePrefix("0.0.0.0/8")
	// Cloud metadata services outside link-local space (AWS's IPv6 one).
	metadataV6 = netip.MustParseAddr("fd00:ec2::254")
)

// allowedAddr decides whether a webhook may connect to a: never to an
// unspecified, "this network", link-local (which holds the cloud metadata
// service, 169.254.169.254), multicast or broadcast address; to loopback
// only when the configured host is loopback; to a private address only
// when allowed. An IPv4 address embedded in an IPv6 one (mapped, NAT64)
// is judged as itself.
func allowedAddr(a netip.Addr, loopbackOK, privateOK bool) error {
	a = a.Unmap()
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	switch {
	case !a.IsValid(), a.IsUnspecified(), a.Is4() && thisV4.Contains(a):
		return fmt.Errorf("address %s is unspecified", a)
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a == metadataV6:
		return fmt.Errorf("address %s is link-local (cloud metadata lives there)", a)
	case a.IsMulticast(), a.IsInterfaceLocalMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("address %s is multicast or broadcast", a)
	case a.IsLoopback():
		if !loopbackOK {
			return fmt.Errorf("address %s is loopback, but the webhook's host is not", a)
		}
	case a.IsPrivate(), a.Is4() && cgnat.Contains(a):
		if !privateOK {
			return fmt.Errorf("address %s is private (set allow_private_network to reach it)", a)
		}
	}
	return nil
}

// errRefusedAddr marks a connection refused by the dial check.
var errRefusedAddr = errors.New("refused address")

// newClient is the HTTP client of one target: every connection's address
// is checked when dialed (after any DNS resolution, so DNS rebinding is
// caught), redirects are never followed, no proxy is used, and each
// request has timeout to finish.
func newClient(t Target, resolver *net.Resolver, timeout time.Duration) *http.Client {
	loop := isLoopbackHost(t.URL.Hostname())
	plain := t.URL.Scheme == "http"
	d := &net.Dialer{
		Timeout:  timeout,
		Resolver: resolver,
		// Called once the socket exists and before it connects.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", errRefusedAddr, address)
			}
			if err := allowedAddr(ap.Addr(), loop, t.AllowPrivate); err != nil {
				return fmt.Errorf("%w: %v", errRefusedAddr, err)
			}
			// Plain http only ever reaches loopback, whatever a name
			// resolved to.
			if plain && !ap.Addr().Unmap().IsLoopback() {
				return fmt.Errorf("%w: http to %s, which is not loopback", errRefusedAddr, ap.Addr())
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: timeout,
		MaxIdleConns:        4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// ParseSecrets reads a secret_file: one Standard Webhooks secret per
// line ("whsec_" + base64 of a key of 24 to 64 bytes), blank lines and
// lines starting with # ignored. Several sign together while a key is
// rotated. The error never repeats the file's content.
func ParseSecrets(b []byte) ([]string, error) {
	var out []string
	for i, line := range bytes.Split(b, []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if !strings.HasPrefix(s, "whsec_") {
			return nil, fmt.Errorf("line %d: a Standard Webhooks secret starts with whsec_", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			return nil, fmt.Errorf("line %d: the secret after whsec_ is not base64", i+1)
		}
		if len(key) < 24 || len(key) > 64 {
			return nil, fmt.Errorf("line %d: the key is %d bytes; use 24 to 64 random bytes", i+1, len(key))
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no secret in the file")
	}
	return out, nil
}

// signer signs with every secret of a target.
type signer []*standardwebhooks.Webhook

func newSigner(secrets []string) (signer, error) {
	var s signer
	for _, sec := range secrets {
		wh, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			return nil, errors.New("notify: a webhook secret does not decode")
		}
		s = append(s, wh)
	}
	if len(s) == 0 {
		return nil, errors.New("notify: a webhook needs a secret")
	}
	return s, nil
}

// headers signs body as message id at ts: the Standard Webhooks headers,
// one signature per secret, space-separated.
func (s signer) headers(id string, ts time.Time, body []byte) (http.Header, error) {
	sigs := make([]string, 0, len(s))
	for _, wh := range s {
		sig, err := wh.Sign(id, ts, body)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, sig)
	}
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, fmt.Sprint(ts.Unix()))
	h.Set(standardwebhooks.HeaderWebhookSignature, strings.Join(sigs, " "))
	return h, nil
}
