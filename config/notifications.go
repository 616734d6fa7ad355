package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/notify"
)

// Notifications configures the webhooks told of tasks and approvals.
type Notifications struct {
	Webhooks []Webhook `yaml:"webhooks"`
	// GiveUpAfter is how long a delivery is retried before it is given up
	// and audited as notification.failed; default 24h, at least 1m.
	GiveUpAfter Duration `yaml:"give_up_after"`
}

// Webhook is one receiver of notifications.
type Webhook struct {
	// URL is https, or http to a loopback address (a sidecar).
	URL string `yaml:"url"`
	// SecretFile holds the Standard Webhooks secret: whsec_ + base64 of
	// the key (one per line while a key is rotated).
	SecretFile string `yaml:"secret_file"`
	// Events are notice types (broker.NoticeTypes); default all of them.
	Events []string `yaml:"events"`
	// Format is standard (default) or slack.
	Format string `yaml:"format"`
	// AllowPrivateNetwork lets the webhook reach private addresses (RFC
	// 1918, RFC 6598, fc00::/7), refused otherwise.
	AllowPrivateNetwork bool `yaml:"allow_private_network"`

	line    int
	secrets []string
}

// UnmarshalYAML records the entry's line, so errors can name it.
func (w *Webhook) UnmarshalYAML(n *yaml.Node) error {
	type plain Webhook
	if err := n.Decode((*plain)(w)); err != nil {
		return err
	}
	w.line = n.Line
	return nil
}

// validateNotifications checks every webhook: its URL against server-side
// request forgery, its secret file, events and format. It reads the
// secret files (relative to the config file), and never repeats their
// content in an error.
func (c *Config) validateNotifications() error {
	n := &c.Notifications
	var errs []error
	if n.GiveUpAfter == 0 {
		n.GiveUpAfter = Duration(24 * time.Hour)
	}
	if time.Duration(n.GiveUpAfter) < time.Minute {
		errs = append(errs, errors.New("config: notifications.give_up_after: at least 1m, such as 24h"))
	}
	seen := map[string]bool{}
	for i := range n.Webhooks {
		w := &n.Webhooks[i]
		bad := func(key, format string, a ...any) {
			at := ""
			if w.line > 0 {
				at = fmt.Sprintf(" (line %d)", w.line)
			}
			errs = append(errs, fmt.Errorf("config: notifications.webhooks[%d].%s%s: %s", i, key, at, fmt.Sprintf(format, a...)))
		}
		if _, err := notify.CheckURL(w.URL, w.AllowPrivateNetwork); err != nil {
			bad("url", "%v", err)
		} else if seen[w.URL] {
			bad("url", "the same URL is configured twice")
		}
		seen[w.URL] = true
		if w.SecretFile == "" {
			bad("secret_file", "required: a file holding the Standard Webhooks secret (whsec_ + base64 of 24 to 64 random bytes)")
		} else {
			w.SecretFile = c.path(w.SecretFile)
			if raw, err := os.ReadFile(w.SecretFile); err != nil {
				bad("secret_file", "cannot read %s", w.SecretFile)
			} else if w.secrets, err = notify.ParseSecrets(raw); err != nil {
				bad("secret_file", "%s: %v", w.SecretFile, err)
			}
		}
		if len(w.Events) == 0 {
			w.Events = slices.Clone(broker.NoticeTypes)
		}
		for _, e := range w.Events {
			if !slices.Contains(broker.NoticeTypes, e) {
				bad("events", "%q is not one of %s", e, strings.Join(broker.NoticeTypes, ", "))
			}
		}
		switch w.Format {
		case "":
			w.Format = notify.FormatStandard
		case notify.FormatStandard, notify.FormatSlack:
		default:
			bad("format", "%q: standard or slack", w.Format)
		}
	}
	return errors.Join(errs...)
}

// WebhookTargets are the webhooks as the notification worker takes them
// (after Validate, which read their secrets).
func (c *Config) WebhookTargets() ([]notify.Target, error) {
	out := make([]notify.Target, 0, len(c.Notifications.Webhooks))
	for i, w := range c.Notifications.Webhooks {
		u, err := notify.CheckURL(w.URL, w.AllowPrivateNetwork)
		if err != nil {
			return nil, fmt.Errorf("config: notifications.webhooks[%d].url: %v", i, err)
		}
		if len(w.secrets) == 0 {
			return nil, fmt.Errorf("config: notifications.webhooks[%d].secret_file: not read", i)
		}
		out = append(out, notify.Target{URL: u, Secrets: w.secrets, Events: w.Events, Format: w.Format,
			AllowPrivate: w.AllowPrivateNetwork})
	}
	return out, nil
}

// BrokerWebhooks are the webhooks as the broker sees them: keys and events.
func (c *Config) BrokerWebhooks() []broker.Webhook {
	out := make([]broker.Webhook, 0, len(c.Notifications.Webhooks))
	for _, w := range c.Notifications.Webhooks {
		key := notify.KeyOf(w.URL)
		if u, err := url.Parse(w.URL); err == nil {
			key = notify.KeyOf(u.String()) // as notify.Target.Key
		}
		out = append(out, broker.Webhook{Key: key, Events: w.Events})
	}
	return out
}
