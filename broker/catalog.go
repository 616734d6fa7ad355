package broker

import (
	"fmt"
	"path"
	"strings"
)

// Class is what an action does. Classes credential, identity and token are
// never grantable to an agent (invariants 4 and 5).
type Class string

const (
	ClassRead       Class = "read"
	ClassWrite      Class = "write"
	ClassAdmin      Class = "admin"
	ClassCredential Class = "credential"
	ClassIdentity   Class = "identity"
	ClassToken      Class = "token"
)

// Blocked reports whether actions of class c are hard-blocked for agents.
func (c Class) Blocked() bool {
	return c == ClassCredential || c == ClassIdentity || c == ClassToken
}

func (c Class) valid() bool {
	switch c {
	case ClassRead, ClassWrite, ClassAdmin, ClassCredential, ClassIdentity, ClassToken:
		return true
	}
	return false
}

// Risk is an action's risk level.
type Risk string

const (
	RiskLow    Risk = "low"
	RiskMedium Risk = "medium"
	RiskHigh   Risk = "high"
)

func (r Risk) rank() int {
	switch r {
	case RiskLow:
		return 1
	case RiskMedium:
		return 2
	case RiskHigh:
		return 3
	}
	return 0
}

// Action is an entry of the action catalog.
type Action struct {
	Name  string
	Class Class
	Risk  Risk
	// Description says in a few words what the action lets an agent do,
	// for the people who approve it (one line, at most 200 bytes).
	Description string
}

// maxDescriptionBytes caps an action's description.
const maxDescriptionBytes = 200

// Audience is a resource server that tokens may be minted for.
type Audience struct {
	URL         string
	Environment string
	// Introspectors are the resource-kind principals for which
	// introspection of a token for this audience answers active, and
	// which read its revocations in the feed. With none, no resource
	// server may, unless AnyIntrospector opts the audience in.
	Introspectors []Ref
	// AnyIntrospector lets every authenticated resource server
	// introspect this audience's tokens and read their revocations
	// (never with Introspectors).
	AnyIntrospector bool
	// CaseInsensitive says the resource server treats resources that
	// differ only in case as one (GitHub: acme/Infra is acme/infra).
	// Scopes for it are canonicalised to lower case wherever they enter
	// (Catalog.Canonical), so containment, budgets and policies see the one
	// form the server acts on.
	CaseInsensitive bool
}

// Grant maps a group of one user issuer to the scopes its members may
// delegate. A group name means something only at the issuer that asserts
// it: partner's "eng" is not corp's "eng".
type Grant struct {
	// Issuer is the user issuer whose group this is. Empty matches a user
	// of any issuer, which config allows only when a single user issuer
	// is configured (and then fills in).
	Issuer string
	Group  string
	Scopes Scopes
	// Audiences limits the audiences members may approve; nil means any.
	Audiences []string
}

// BuiltinDenyList is the backstop of invariant 5: action-name patterns that
// create or change credentials, identities, tokens or permissions.
// Segments are separated by `.`; a segment `*` matches one segment, `**`
// any number of segments (zero included), and a `*` inside a segment any
// run of characters within it (`*password*` matches `resetpassword`).
// Matching is case-insensitive. Config can add patterns and never remove
// any. A catalog action matching it must carry class credential, identity
// or token, or Errand refuses to start.
var BuiltinDenyList = []string{
	"**.iam*.**", "**.*iam.**",
	"**.*credential*.**", "**.*password*.**", "**.*passwd*.**",
	"**.*accesskey*.**", "**.*apikey*.**", "**.*secretkey*.**", "**.*deploykey*.**",
	"**.*serviceaccountkey*.**", "**.*sshkey*.**", "**.*signingkey*.**",
	"**.key.create", "**.keys.create", "**.key.rotate", "**.keys.rotate",
	"**.token.**", "**.tokens.**", "**.*token.create", "**.*tokens.create", "**.pat.**", "**.pats.**",
	"**.*rolebinding*.**", "**.role.assign", "**.roles.assign", "**.role.write", "**.roles.write",
	"**.policy.write", "**.policies.write", "**.*policy.attach", "**.*policies.attach",
	"**.mfa.**", "**.*totp*.**", "**.user.impersonate", "**.users.impersonate",
	"vault.auth.**", "vault.sys.**", "vault.identity.**",
}

// Catalog is the action catalog, the audiences, the user grants and the
// deny list: everything the broker decides scopes against. The zero value
// knows nothing and so denies everything (invariant 9).
type Catalog struct {
	actions   map[string]Action
	audiences map[string]Audience
	grants    []Grant
	deny      []string
	// deniedBy is the deny-list pattern each catalog action matches,
	// worked out once: the catalog never changes, and matching every
	// pattern at every request was a tenth of an evaluation's cost.
	deniedBy map[string]string
}

// NewCatalog validates and assembles a catalog. Every grant scope and every
// audience must refer to known entries; an action on the deny list must be
// given a blocked class.
func NewCatalog(actions []Action, audiences []Audience, grants []Grant, extraDeny []string) (*Catalog, error) {
	c := &Catalog{
		actions:   make(map[string]Action, len(actions)),
		audiences: make(map[string]Audience, len(audiences)),
		deny:      append(append([]string(nil), BuiltinDenyList...), extraDeny...),
	}
	for _, p := range extraDeny {
		if err := validDenyPattern(p); err != nil {
			return nil, fmt.Errorf("deny list pattern %q: %w", p, err)
		}
	}
	for i, a := range actions {
		name := strings.ToLower(a.Name)
		if !validAction(name) || name != a.Name {
			return nil, fmt.Errorf("actions[%d].name: %q is not a valid action name (lower case, dot-separated)", i, a.Name)
		}
		if !a.Class.valid() {
			return nil, fmt.Errorf("actions[%d] %s: unknown class %q", i, a.Name, a.Class)
		}
		if a.Risk.rank() == 0 {
			return nil, fmt.Errorf("actions[%d] %s: unknown risk %q", i, a.Name, a.Risk)
		}
		if err := checkText("description", a.Description, maxDescriptionBytes, false); err != nil {
			return nil, fmt.Errorf("actions[%d] %s: %w", i, a.Name, err)
		}
		if _, dup := c.actions[name]; dup {
			return nil, fmt.Errorf("actions[%d]: duplicate action %q", i, a.Name)
		}
		// A mis-classified credential action is a config error; an action
		// on the operator's own deny list is simply blocked.
		if p, hit := matchAny(BuiltinDenyList, name); hit && !a.Class.Blocked() {
			return nil, fmt.Errorf("actions[%d] %s: matches deny-list pattern %q but has class %q; give it class credential, identity or token", i, a.Name, p, a.Class)
		}
		c.actions[name] = a
	}
	for i, au := range audiences {
		if au.URL == "" {
			return nil, fmt.Errorf("audiences[%d]: empty url", i)
		}
		if _, dup := c.audiences[au.URL]; dup {
			return nil, fmt.Errorf("audiences[%d]: duplicate audience %q", i, au.URL)
		}
		c.audiences[au.URL] = au
	}
	for i, g := range grants {
		if g.Group == "" {
			return nil, fmt.Errorf("grants[%d]: empty group", i)
		}
		for _, sc := range g.Scopes {
			if _, ok := c.actions[sc.Action]; !ok {
				return nil, fmt.Errorf("grants[%d].scopes: action %q is not in actions", i, sc.Action)
			}
		}
		for _, a := range g.Audiences {
			if _, ok := c.audiences[a]; !ok {
				return nil, fmt.Errorf("grants[%d].audiences: audience %q is not in audiences", i, a)
			}
		}
		c.grants = append(c.grants, g)
	}
	c.deniedBy = map[string]string{}
	for name := range c.actions {
		if p, hit := matchAny(c.deny, name); hit {
			c.deniedBy[name] = p
		}
	}
	return c, nil
}

// Action returns the catalog entry for name.
func (c *Catalog) Action(name string) (Action, bool) {
	a, ok := c.actions[name]
	return a, ok
}

// Audience returns the catalog entry for url, matched exactly.
func (c *Catalog) Audience(url string) (Audience, bool) {
	a, ok := c.audiences[url]
	return a, ok
}

// GrantsFor returns the scopes user u may delegate: those of the grants
// of u's issuer naming one of u's groups.
func (c *Catalog) GrantsFor(u Principal) Scopes {
	var out Scopes
	for _, g := range c.grants {
		if g.holds(u) {
			out = append(out, g.Scopes...)
		}
	}
	return out
}

// holds reports whether user u is a member of g: u's issuer is g's and
// asserted g's group.
func (g Grant) holds(u Principal) bool {
	return (g.Issuer == "" || g.Issuer == u.Issuer) && contains(u.Groups, g.Group)
}

// Granted reports whether user u may delegate sc for the audience aud:
// one single grant of u's must cover both, so that a scope granted for one
// audience never rides on a grant of another.
func (c *Catalog) Granted(u Principal, sc Scope, aud string) bool {
	for _, g := range c.grants {
		if !g.holds(u) || !g.Scopes.Covers(sc) {
			continue
		}
		if g.Audiences == nil || contains(g.Audiences, aud) {
			return true
		}
	}
	return false
}

// CaseInsensitive reports whether one of audiences compares resources
// case-insensitively.
func (c *Catalog) CaseInsensitive(audiences ...string) bool {
	for _, a := range audiences {
		if c.audiences[a].CaseInsensitive {
			return true
		}
	}
	return false
}

// Canonical is s as Errand keeps and decides it for audiences: in lower
// case when one of them compares resources case-insensitively, so that a
// case variant of a path (acme/INFRA/**) is the path itself everywhere
// after — containment, budgets, policies and the token's scope — rather
// than a second spelling that a rule protecting acme/infra never names.
// A task's scopes serve all its audiences, so one such audience is enough
// to make them lower case for all. Otherwise s is returned unchanged.
func (c *Catalog) Canonical(s Scopes, audiences ...string) Scopes {
	if !c.CaseInsensitive(audiences...) {
		return s
	}
	return s.Lower()
}

// CheckKnown refuses scopes whose action is not in the catalog.
func (c *Catalog) CheckKnown(s Scopes) error {
	for _, sc := range s {
		if _, ok := c.actions[sc.Action]; !ok {
			return Errorf(ErrInvalidScope, "unknown action %q", sc.Action)
		}
	}
	return nil
}

// CheckGrantable refuses the whole set if any scope is hard-blocked: its
// action's class is credential, identity or token, or it matches the deny
// list. Nothing is ever trimmed silently.
func (c *Catalog) CheckGrantable(s Scopes) error {
	for _, sc := range s {
		a, ok := c.actions[sc.Action]
		if !ok {
			return Errorf(ErrInvalidScope, "unknown action %q", sc.Action)
		}
		if a.Class.Blocked() {
			return Errorf(ErrBlockedAction, "%s has class %s, which is never grantable to an agent", sc.Action, a.Class)
		}
		if p, hit := c.denied(sc.Action); hit {
			return Errorf(ErrBlockedAction, "%s matches the deny list (%s)", sc.Action, p)
		}
	}
	return nil
}

// Risk returns the highest risk among the actions of s.
func (c *Catalog) Risk(s Scopes) Risk {
	best := RiskLow
	for _, sc := range s {
		if a, ok := c.actions[sc.Action]; ok && a.Risk.rank() > best.rank() {
			best = a.Risk
		}
	}
	return best
}

func (c *Catalog) denied(action string) (string, bool) {
	if _, known := c.actions[action]; known && c.deniedBy != nil {
		p, hit := c.deniedBy[action]
		return p, hit
	}
	return matchAny(c.deny, action)
}

func matchAny(patterns []string, action string) (string, bool) {
	for _, p := range patterns {
		if globMatch(strings.Split(p, "."), strings.Split(action, ".")) {
			return p, true
		}
	}
	return "", false
}

func validDenyPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty")
	}
	for _, seg := range strings.Split(strings.ToLower(p), ".") {
		if seg == "*" || seg == "**" {
			continue
		}
		if !validAction(strings.ReplaceAll(seg, "*", "x")) {
			return fmt.Errorf("segment %q is neither a name, a name with * wildcards, * nor **", seg)
		}
	}
	return nil
}

// globMatch matches dot-segments: `*` one segment, `**` zero or more.
func globMatch(pat, segs []string) bool {
	if len(pat) == 0 {
		return len(segs) == 0
	}
	switch pat[0] {
	case "**":
		for i := 0; i <= len(segs); i++ {
			if globMatch(pat[1:], segs[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(segs) > 0 && globMatch(pat[1:], segs[1:])
	default:
		if len(segs) == 0 {
			return false
		}
		ok, err := path.Match(strings.ToLower(pat[0]), strings.ToLower(segs[0]))
		return err == nil && ok && globMatch(pat[1:], segs[1:])
	}
}
