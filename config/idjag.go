package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
)

// IDJAGTarget is an authorization server that accepts Errand's ID-JAGs
// (MCP Enterprise-Managed Authorization): agents exchange a task for a
// grant naming its issuer (audience) and one of its resources.
type IDJAGTarget struct {
	// Issuer is the authorization server's issuer identifier, the aud
	// of its grants: an absolute https URL (http only on a loopback host).
	Issuer string `yaml:"issuer"`
	// AudienceResources are the resources (RFC 8707) a grant may name,
	// such as an MCP server's URL; each is one of audiences, so that a
	// task's approval names it.
	AudienceResources []string `yaml:"audience_resources"`
	// ClientID is the agents' client id at the target.
	ClientID string `yaml:"client_id"`
	// ScopesMap writes Errand scopes (or every scope of an action) in the
	// target's scope names; when set, a scope it does not map is refused.
	ScopesMap map[string]string `yaml:"scopes_map"`
	// MaxLifetime bounds a grant's life: at most, and by default, 5m.
	MaxLifetime Duration `yaml:"max_lifetime"`
	// EventsEndpoint is the target's Security Event Token push endpoint
	// (RFC 8935), told of every revoked grant; empty: none.
	EventsEndpoint string `yaml:"events_endpoint"`
}

// validateIDJAG checks id_jag_targets against the catalog and writes out
// the default lifetime.
func (c *Config) validateIDJAG(cat *broker.Catalog) error {
	var errs []error
	seen := map[string]bool{}
	for i := range c.IDJAGTargets {
		t := &c.IDJAGTargets[i]
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("config: id_jag_targets[%d].%s", i, fmt.Sprintf(format, a...)))
		}
		if !secureURL(t.Issuer) {
			bad("issuer: an absolute https URL (http only on a loopback host), without query or fragment")
		} else if seen[t.Issuer] {
			bad("issuer: %q is a target twice", t.Issuer)
		}
		seen[t.Issuer] = true
		if len(t.AudienceResources) == 0 {
			bad("audience_resources: at least one resource is required")
		}
		for j, r := range t.AudienceResources {
			if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
				bad("audience_resources[%d]: an absolute URL without fragment", j)
			} else if _, err := cat.ResolveResource(r); err != nil {
				// A task's approval names it as it names any audience.
				bad("audience_resources[%d]: %q is not one of audiences", j, r)
			}
		}
		if t.ClientID == "" {
			bad("client_id: required: the agents' client id at the target")
		}
		if t.EventsEndpoint != "" && !pushURL(t.EventsEndpoint) {
			bad("events_endpoint: an absolute https URL (http only on a loopback host), without fragment")
		}
		if t.MaxLifetime == 0 {
			t.MaxLifetime = Duration(broker.DefaultIDJAGLifetime)
		}
		if d := time.Duration(t.MaxLifetime); d < time.Second || d > broker.DefaultIDJAGLifetime {
			bad("max_lifetime: from 1s to 5m")
		}
		for k, v := range t.ScopesMap {
			if !mapsFrom(cat, k) {
				bad("scopes_map: %q is neither a grantable Errand scope nor an action", k)
			}
			// One name per scope: a value of several names would widen.
			if v == "" || strings.ContainsAny(v, " \t\r\n\"\\") {
				bad("scopes_map[%q]: one scope name of the target", k)
			}
		}
	}
	return errors.Join(errs...)
}

// mapsFrom reports whether k, a scopes_map key, is an action of the
// catalog or a grantable scope of one.
func mapsFrom(cat *broker.Catalog, k string) bool {
	if _, ok := cat.Action(k); ok {
		return true
	}
	sc, err := broker.ParseScope(k)
	if err != nil {
		return false
	}
	if _, ok := cat.Action(sc.Action); !ok {
		return false
	}
	return cat.CheckGrantable(broker.Scopes{sc}) == nil
}

// pushURL reports whether raw is an absolute https URL, or http on a
// loopback host, without userinfo or fragment: an endpoint Errand posts to.
func pushURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Fragment != "" {
		return false
	}
	u.RawQuery = ""
	return secureURL(u.String())
}

// secureURL reports whether raw is an absolute https URL, or http on a
// loopback host, with no query or fragment: an issuer identifier.
func secureURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		h := u.Hostname()
		if h == "localhost" {
			return true
		}
		ip := net.ParseIP(h)
		return ip != nil && ip.IsLoopback()
	}
	return false
}

// BrokerIDJAGTargets are the targets as the broker takes them.
func (c *Config) BrokerIDJAGTargets() []broker.IDJAGTarget {
	out := make([]broker.IDJAGTarget, len(c.IDJAGTargets))
	for i, t := range c.IDJAGTargets {
		out[i] = broker.IDJAGTarget{
			Issuer: t.Issuer, Resources: t.AudienceResources, ClientID: t.ClientID,
			ScopesMap: t.ScopesMap, MaxLifetime: time.Duration(t.MaxLifetime), EventsEndpoint: t.EventsEndpoint,
		}
	}
	return out
}
