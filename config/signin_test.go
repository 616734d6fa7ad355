package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSigninKeys: the sign-in keys of a user issuer and the session
// timeouts are checked at start, each problem naming its key.
func TestSigninKeys(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	user := "admin_group: errand-admins"
	for _, tc := range []struct {
		name, old, new, key string
	}{
		{"client_id on an agent issuer", "kind: agent", "kind: agent\n    client_id: errand", "issuers[0].client_id"},
		{"client_id other than audience", user, user + "\n    client_id: other", "issuers[1].client_id"},
		{"redirect_path without client_id", user, user + "\n    redirect_path: /ui/cb", "issuers[1].client_id"},
		{"redirect_path not a path", user, user + "\n    client_id: errand\n    redirect_path: //evil.example/cb", "issuers[1].redirect_path"},
		{"client_secret_file missing", user, user + "\n    client_id: errand\n    client_secret_file: " + filepath.Join(dir, "nope"), "issuers[1].client_secret_file"},
		{"client_secret_file empty", user, user + "\n    client_id: errand\n    client_secret_file: " + empty, "issuers[1].client_secret_file"},
		{"idle timeout longer than absolute", "limits:", "sessions: {idle_timeout: 9h, absolute_timeout: 8h}\nlimits:", "sessions.idle_timeout"},
		{"timeouts under a minute", "limits:", "sessions: {idle_timeout: 10s}\nlimits:", "sessions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(strings.Replace(valid, tc.old, tc.new, 1)), goodEnv)
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), "config: "+tc.key) {
				t.Fatalf("got %v, want an error naming %s", err, tc.key)
			}
		})
	}
	t.Run("two user issuers on one redirect_path", func(t *testing.T) {
		two := strings.Replace(valid, user, user+"\n    client_id: errand\n  - {url: https://partners.example.com, audience: p, client_id: p, kind: user}", 1)
		two = strings.Replace(two, "  - group: engineers", "  - group: engineers\n    issuer: https://login.example.com", 1)
		c, err := Parse([]byte(two), goodEnv)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "config: issuers[2].redirect_path: /ui/callback is already https://login.example.com's") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("valid: defaults written out, secret read", func(t *testing.T) {
		c, err := Parse([]byte(strings.Replace(valid, user, user+"\n    client_id: errand\n    client_secret_file: "+secret, 1)), goodEnv)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if time.Duration(c.Sessions.IdleTimeout) != 30*time.Minute || time.Duration(c.Sessions.AbsoluteTimeout) != 8*time.Hour {
			t.Fatalf("sessions %+v", c.Sessions)
		}
		ps, err := c.SigninProviders()
		if err != nil || len(ps) != 1 || ps[0].ClientSecret != "s3cret" || ps[0].RedirectPath != "/ui/callback" || ps[0].Issuer != "https://login.example.com" {
			t.Fatalf("providers %+v %v", ps, err)
		}
	})
}
