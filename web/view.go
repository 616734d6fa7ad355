package web

import (
	"fmt"
	"html/template"
	"strings"
	"time"
	"unicode"

	"github.com/errandhq/errand/broker"
)

var funcs = template.FuncMap{
	"visible": visible,
	"rfc3339": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	},
}

// visible renders text someone other than Errand wrote (an agent's goal,
// tool or dataset, a deny reason) so that it reads as exactly what was
// sent and nothing more: every character that changes how the text
// around it is shown (a newline, a bidirectional override or isolate, a
// control or format character) is written as its escape, \n or \u202e,
// instead of acting (P04). html/template escapes the markup after.
func visible(s string) string { return escapeUnsafe(s, true) }

// visibleJSON renders recorded JSON (an audit event's detail), whose
// backslashes are its own escapes: only the characters JSON leaves as
// they are and that act on the text around them are escaped.
func visibleJSON(s string) string { return escapeUnsafe(s, false) }

func escapeUnsafe(s string, backslash bool) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\\' && backslash:
			b.WriteString(`\\`)
		case broker.DisplayUnsafe(r) || unicode.Is(unicode.Cf, r) || !unicode.IsPrint(r) && r != ' ':
			if r > 0xffff {
				fmt.Fprintf(&b, `\U%08x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// relative is a duration from now, in words: "in 55 min", "3 h ago".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now)
	future := d >= 0
	if !future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		s = fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// scopeRow is one scope as a decision shows it: what the catalog says of
// its action and whether the viewer's grants cover it.
type scopeRow struct {
	Scope       string
	Action      string
	Resource    string
	Class, Risk string
	Description string
	InCatalog   bool
	// Narrowable: the resource is a pattern ("*" or "**"), so the
	// approver may approve a narrower one.
	Narrowable bool
	// Blocked: the action can never be granted to an agent.
	Blocked bool
	// Covered: the viewer's grants cover the scope for every audience;
	// CoverNote says what is missing otherwise.
	Covered   bool
	CoverNote string
	// Approved: part of the approval (a decided task).
	Approved bool
}

// audienceRow is one audience: a resource server and its environment.
type audienceRow struct {
	URL, Environment string
	Known            bool
	Approved         bool
}

// scopeRows describes scopes for viewer v, against the audiences auds.
func (p *Pages) scopeRows(v broker.Principal, scopes, approved broker.Scopes, auds []string) []scopeRow {
	cat := p.svc.Catalog()
	grants := cat.GrantsFor(v)
	out := make([]scopeRow, 0, len(scopes))
	for _, sc := range scopes {
		row := scopeRow{Scope: sc.String(), Action: sc.Action, Resource: sc.ResourcePath()}
		if row.Resource == "" {
			row.Resource = "**"
		}
		if a, ok := cat.Action(sc.Action); ok {
			row.InCatalog, row.Class, row.Risk, row.Description = true, string(a.Class), string(a.Risk), a.Description
		}
		row.Narrowable = strings.Contains(row.Resource, "*")
		row.Blocked = cat.CheckGrantable(broker.Scopes{sc}) != nil
		var missing []string
		if v.Kind == broker.KindUser && grants.Covers(sc) {
			for _, a := range auds {
				if !cat.Granted(v, sc, a) {
					missing = append(missing, a)
				}
			}
			row.Covered = len(missing) == 0
			if !row.Covered {
				row.CoverNote = "not for " + strings.Join(missing, ", ")
			}
		} else {
			row.CoverNote = "not covered by your grants"
		}
		if row.Blocked {
			row.Covered, row.CoverNote = false, "never grantable to an agent"
		}
		row.Approved = approved.Covers(sc) && contains(approved.Strings(), sc.String())
		out = append(out, row)
	}
	return out
}

func (p *Pages) audienceRows(auds, approved []string) []audienceRow {
	out := make([]audienceRow, 0, len(auds))
	for _, a := range auds {
		row := audienceRow{URL: a, Approved: contains(approved, a)}
		if au, ok := p.svc.Catalog().Audience(a); ok {
			row.Known, row.Environment = true, au.Environment
		}
		out = append(out, row)
	}
	return out
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
