package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/errandhq/errand/signin"
)

// Sessions are the timeouts of people's browser sessions.
type Sessions struct {
	// IdleTimeout ends a session unused this long (default 30m).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// AbsoluteTimeout ends a session this long after sign-in (default 8h).
	AbsoluteTimeout Duration `yaml:"absolute_timeout"`
}

// validateSignin checks the sign-in keys of the issuers and the session
// timeouts, and writes out the defaults.
func (c *Config) validateSignin() error {
	var errs []error
	s := &c.Sessions
	if s.IdleTimeout == 0 {
		s.IdleTimeout = Duration(signin.DefaultIdleTimeout)
	}
	if s.AbsoluteTimeout == 0 {
		s.AbsoluteTimeout = Duration(signin.DefaultAbsoluteTimeout)
	}
	if s.IdleTimeout < Duration(time.Minute) || s.AbsoluteTimeout < Duration(time.Minute) {
		errs = append(errs, errors.New("config: sessions: idle_timeout and absolute_timeout are at least 1m"))
	} else if s.IdleTimeout > s.AbsoluteTimeout {
		errs = append(errs, errors.New("config: sessions.idle_timeout: longer than absolute_timeout"))
	}
	paths := map[string]string{}
	for i := range c.Issuers {
		is := &c.Issuers[i]
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("config: issuers[%d].%s", i, fmt.Sprintf(format, a...)))
		}
		if is.ClientID == "" {
			if is.ClientSecretFile != "" || is.RedirectPath != "" || len(is.Scopes) > 0 {
				bad("client_id: required with client_secret_file, redirect_path or scopes")
			}
			continue
		}
		if is.Kind != "user" {
			bad("client_id: only people sign in: a client_id belongs on an issuer of kind user")
			continue
		}
		// The ID token of a sign-in is verified as any bearer token of
		// the issuer is, audience included: its aud is the client_id.
		if is.ClientID != is.Audience {
			bad("client_id: must equal audience (%q): the ID tokens of a sign-in are issued to the client_id, and verified like every token of the issuer", is.Audience)
		}
		if is.RedirectPath == "" {
			is.RedirectPath = signin.DefaultRedirectPath
		}
		if p, ok := signin.SafeReturnTo(is.RedirectPath); !ok || strings.ContainsAny(p, "?#") {
			bad("redirect_path: an absolute path such as /ui/callback")
		} else if other, dup := paths[is.RedirectPath]; dup {
			bad("redirect_path: %s is already %s's; each user issuer needs its own", is.RedirectPath, other)
		}
		paths[is.RedirectPath] = is.URL
		if is.ClientSecretFile != "" {
			is.ClientSecretFile = c.path(is.ClientSecretFile)
			if b, err := os.ReadFile(is.ClientSecretFile); err != nil {
				bad("client_secret_file: %v", err)
			} else if strings.TrimSpace(string(b)) == "" {
				bad("client_secret_file: empty")
			}
		}
	}
	return errors.Join(errs...)
}

// SigninProviders are the user issuers people sign in with, their client
// secrets read.
func (c *Config) SigninProviders() ([]signin.Provider, error) {
	var out []signin.Provider
	for _, is := range c.Issuers {
		if is.ClientID == "" || is.Kind != "user" {
			continue
		}
		p := signin.Provider{Issuer: is.URL, ClientID: is.ClientID, RedirectPath: is.RedirectPath, Scopes: is.Scopes}
		if is.ClientSecretFile != "" {
			b, err := os.ReadFile(is.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("config: client_secret_file: %w", err)
			}
			p.ClientSecret = strings.TrimSpace(string(b))
		}
		out = append(out, p)
	}
	return out, nil
}
