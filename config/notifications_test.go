package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// TestW01NotificationsAreCheckedAtLoad: webhooks load with their secrets
// and default events and format; a forbidden URL (plain http off
// loopback, the metadata address), a missing or malformed secret file, an
// unknown event or format each stop start-up naming the key and its line,
// and no error repeats a secret.
func TestW01NotificationsAreCheckedAtLoad(t *testing.T) {
	dir := t.TempDir()
	secret := "whsec_" + strings.Repeat("QUJD", 8) // 24 bytes
	if err := os.WriteFile(filepath.Join(dir, "hook.secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.secret"), []byte("not-a-secret-at-all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := valid + `notifications:
  webhooks:
    - url: https://hooks.example.com/errand
      secret_file: hook.secret
    - {url: "http://127.0.0.1:9000/slack", secret_file: hook.secret, events: [task.created], format: slack}
`
	c, err := parse([]byte(good), goodEnv, dir)
	if err != nil {
		t.Fatal(err)
	}
	w := c.Notifications.Webhooks
	if len(w) != 2 || w[0].Format != "standard" || !slices.Equal(w[0].Events, broker.NoticeTypes) || w[1].Format != "slack" ||
		time.Duration(c.Notifications.GiveUpAfter) != 24*time.Hour {
		t.Fatalf("webhooks %+v", c.Notifications)
	}
	targets, err := c.WebhookTargets()
	if err != nil || len(targets) != 2 || targets[0].Secrets[0] != secret || targets[0].Key() != c.BrokerWebhooks()[0].Key {
		t.Fatalf("targets %+v, %v", targets, err)
	}
	bad := valid + `notifications:
  webhooks:
    - url: http://hooks.example.com/errand
      secret_file: hook.secret
    - url: https://169.254.169.254/latest/meta-data/
      secret_file: bad.secret
    - url: https://hooks.example.com/two
      secret_file: missing.secret
      events: [credential.issued]
      format: teams
`
	_, err = parse([]byte(bad), goodEnv, dir)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"notifications.webhooks[0].url (line 31): http is allowed only to a loopback address",
		"notifications.webhooks[1].url (line 33): address 169.254.169.254 is link-local",
		"notifications.webhooks[1].secret_file (line 33):",
		"a Standard Webhooks secret starts with whsec_",
		"notifications.webhooks[2].secret_file (line 35): cannot read",
		`notifications.webhooks[2].events (line 35): "credential.issued" is not one of`,
		`notifications.webhooks[2].format (line 35): "teams": standard or slack`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "not-a-secret-at-all") {
		t.Errorf("an error repeats the secret file's content: %v", err)
	}
}
