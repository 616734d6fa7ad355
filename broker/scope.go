package broker

import (
	"sort"
	"strings"
)

// MaxScopeLen bounds a scope string; longer input is refused before parsing.
const MaxScopeLen = 512

// Scope is a parsed, canonical `action[:resource]`. The resource is a
// `/`-separated path whose segments are literals, `*` (exactly one segment)
// or a final `**` (one or more further segments). A scope written without a
// resource has the resource `**`: every path.
type Scope struct {
	Action   string
	Resource []string
}

// ResourcePath is the scope's resource as written ("a/b/**").
func (s Scope) ResourcePath() string { return strings.Join(s.Resource, "/") }

// ParseScope parses and canonicalises s. Canonical form: the action in
// lower case; the resource exactly as written, which must already be clean —
// empty, `.` and `..` segments, percent-encoding, white space, backslashes,
// control and non-ASCII characters are refused rather than normalised, so
// two spellings of one path can never be compared raw.
func ParseScope(s string) (Scope, error) {
	if s == "" {
		return Scope{}, Errorf(ErrInvalidScope, "empty scope")
	}
	if len(s) > MaxScopeLen {
		return Scope{}, Errorf(ErrInvalidScope, "scope longer than %d bytes", MaxScopeLen)
	}
	action, resource, hasResource := strings.Cut(s, ":")
	action = strings.ToLower(action)
	if !validAction(action) {
		return Scope{}, Errorf(ErrInvalidScope, "scope %q: malformed action name", s)
	}
	if !hasResource {
		return Scope{Action: action, Resource: []string{"**"}}, nil
	}
	if resource == "" {
		return Scope{}, Errorf(ErrInvalidScope, "scope %q: empty resource", s)
	}
	segs := strings.Split(resource, "/")
	for i, seg := range segs {
		switch {
		case seg == "":
			return Scope{}, Errorf(ErrInvalidScope, "scope %q: empty path segment", s)
		case seg == "." || seg == "..":
			return Scope{}, Errorf(ErrInvalidScope, "scope %q: relative path segment", s)
		case seg == "**":
			if i != len(segs)-1 {
				return Scope{}, Errorf(ErrInvalidScope, "scope %q: ** is only allowed as the last segment", s)
			}
		case seg == "*":
		default:
			for j := 0; j < len(seg); j++ {
				if !resourceByte(seg[j]) {
					return Scope{}, Errorf(ErrInvalidScope, "scope %q: character %q not allowed in a resource", s, seg[j])
				}
			}
		}
	}
	return Scope{Action: action, Resource: segs}, nil
}

// MustParseScope is ParseScope for literals (tests and examples); it panics on an invalid one.
func MustParseScope(s string) Scope {
	sc, err := ParseScope(s)
	if err != nil {
		panic(err)
	}
	return sc
}

func validAction(a string) bool {
	if a == "" || len(a) > 128 {
		return false
	}
	for _, part := range strings.Split(a, ".") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (i > 0 && (c == '_' || c == '-'))
			if !ok {
				return false
			}
		}
	}
	return true
}

// resourceByte is the allow-list of bytes in a literal resource segment.
// `*` is refused inside a segment: wildcards are whole segments only.
func resourceByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '~', '@', '+', '=', ',', ':':
		return true
	}
	return false
}

// String returns the canonical text of sc. A resource of `**` is written
// out in full so the string form is unambiguous.
func (sc Scope) String() string {
	return sc.Action + ":" + strings.Join(sc.Resource, "/")
}

// CoveredBy reports whether every concrete request matched by sc is also
// matched by other: same action, and resource pattern containment decided
// segment by segment — never by string prefix.
func (sc Scope) CoveredBy(other Scope) bool {
	return sc.Action == other.Action && patternCovered(sc.Resource, other.Resource)
}

// patternCovered reports whether pattern a ⊆ pattern b.
func patternCovered(a, b []string) bool {
	for i, bs := range b {
		if bs == "**" {
			// ** matches one or more segments: a must have at least one left.
			return len(a) > i
		}
		if i >= len(a) {
			return false
		}
		as := a[i]
		switch {
		case as == "**":
			return false // a matches arbitrarily deep paths, b does not
		case bs == "*":
			// any single segment of a (literal or *) is covered
		case as == "*":
			return false // a matches any segment, b only one literal
		case as != bs:
			return false
		}
	}
	return len(a) == len(b)
}

// Lower is sc with its resource in lower case, the canonical form of a
// resource at a case-insensitive audience (Catalog.Canonical). Actions are
// lower case already, and wildcards have no case.
func (sc Scope) Lower() Scope {
	out := Scope{Action: sc.Action, Resource: make([]string, len(sc.Resource))}
	for i, seg := range sc.Resource {
		out.Resource[i] = strings.ToLower(seg)
	}
	return out
}

// Scopes is a set of canonical scopes.
type Scopes []Scope

// Lower is every scope of s in lower case, sorted and without the
// duplicates that folding may make (A/b and a/B are one scope).
func (s Scopes) Lower() Scopes {
	out := make(Scopes, len(s))
	for i, sc := range s {
		out[i] = sc.Lower()
	}
	return out.normalise()
}

// ParseScopes parses every string, refusing the whole list on the first
// error, and returns the set sorted and without duplicates.
func ParseScopes(ss []string) (Scopes, error) {
	if len(ss) == 0 {
		return nil, Errorf(ErrInvalidScope, "no scopes")
	}
	if len(ss) > 64 {
		return nil, Errorf(ErrInvalidScope, "more than 64 scopes")
	}
	out := make(Scopes, 0, len(ss))
	for _, s := range ss {
		sc, err := ParseScope(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out.normalise(), nil
}

func (s Scopes) normalise() Scopes {
	sort.Slice(s, func(i, j int) bool { return s[i].String() < s[j].String() })
	out := s[:0]
	for i, sc := range s {
		if i > 0 && sc.String() == out[len(out)-1].String() {
			continue
		}
		out = append(out, sc)
	}
	return out
}

// Strings returns the canonical strings.
func (s Scopes) Strings() []string {
	out := make([]string, len(s))
	for i, sc := range s {
		out[i] = sc.String()
	}
	return out
}

// Covers reports whether sc is covered by at least one scope of s.
func (s Scopes) Covers(sc Scope) bool {
	for _, o := range s {
		if sc.CoveredBy(o) {
			return true
		}
	}
	return false
}

// Uncovered returns the scopes of want that s does not cover.
func (s Scopes) Uncovered(want Scopes) Scopes {
	var out Scopes
	for _, sc := range want {
		if !s.Covers(sc) {
			out = append(out, sc)
		}
	}
	return out
}
