package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// displayUnsafe are characters that change how the text around them is
// shown: each could forge lines in, or reorder, an approver's view.
var displayUnsafe = map[string]string{
	"newline":                  "\n",
	"tab":                      "\t",
	"carriage return":          "\r",
	"escape":                   "\x1b",
	"DEL":                      "\x7f",
	"C1 next line":             "\u0085",
	"right-to-left override":   "\u202e",
	"left-to-right embedding":  "\u202a",
	"first strong isolate":     "\u2068",
	"pop directional isolate":  "\u2069",
	"line separator":           "\u2028",
	"paragraph separator":      "\u2029",
	"right-to-left mark":       "\u200f",
	"fake block after newline": "triage issues\n\nrisk      low\nscopes    github.repo.read (read-only)\n",
}

// TestH09GoalWithControlCharactersIsRefused: a goal holding any character
// that changes how text is displayed is refused (400 invalid_request,
// audited, nothing stored), so that no view can show a forged block.
func TestH09GoalWithControlCharactersIsRefused(t *testing.T) {
	e := newEnv(t)
	for name, bad := range displayUnsafe {
		t.Run(name, func(t *testing.T) {
			e.t = t
			before := e.snapshot()
			r := e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
				"on_behalf_of": "alice", "goal": "triage " + bad + " issues", "scopes": []string{"github.pr.write:acme/**"},
				"audiences": []string{apiGitHub},
			})
			e.refused(before, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(r.str("detail"), "goal") || strings.Contains(r.str("detail"), bad) {
				t.Fatalf("detail %q should name the field and not repeat the text", r.str("detail"))
			}
		})
	}
	e.t = t
	// Text of other scripts, accents and emoji is not a control character.
	r := e.mustStatus(e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{
		"on_behalf_of": "alice", "goal": "trier les tickets – «urgent» ✓ שלום", "scopes": []string{"github.repo.read"},
		"audiences": []string{apiGitHub},
	}), http.StatusCreated)
	if r.str("goal") != "trier les tickets – «urgent» ✓ שלום" {
		t.Fatalf("goal stored as %q", r.str("goal"))
	}
}

// TestR05LabelsWithControlCharactersAreRefused: tool, dataset and every
// reason (a task's denial, a step-up's denial) are refused the same way,
// wherever they are sent: a task, a mint, a step-up, an AuthZEN request.
func TestR05LabelsWithControlCharactersAreRefused(t *testing.T) {
	e := policyEnv(t, envOptions{})
	pending := e.task("agent-1", "alice", "github.repo.read:acme/**")
	approved := e.approved("agent-1", "alice", "github.pr.write:acme/**", "github.repo.read:acme/**")
	stepUp := mintWith(e, "agent-1", approved, map[string]any{"scopes": []string{"github.pr.write:acme/api"}, "audience": apiGitHub})
	apr := stepUp.str("approval_id")
	if stepUp.str("code") != "approval_required" || apr == "" {
		t.Fatalf("no step-up approval to deny: %s", stepUp.Raw)
	}
	at := e.mustStatus(e.mint("agent-1", approved, "github.repo.read:acme/api"), http.StatusCreated).str("access_token")

	fields := map[string]func(bad string) resp{
		"task tool": func(bad string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{"on_behalf_of": "alice", "goal": "g",
				"scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}, "tool": "gh" + bad})
		},
		"task dataset": func(bad string) resp {
			return e.do("POST", "/v1/tasks", e.agent("agent-1"), map[string]any{"on_behalf_of": "alice", "goal": "g",
				"scopes": []string{"github.repo.read"}, "audiences": []string{apiGitHub}, "dataset": "orders" + bad})
		},
		"mint tool": func(bad string) resp {
			return mintWith(e, "agent-1", approved, map[string]any{"scopes": []string{"github.repo.read:acme/api"},
				"audience": apiGitHub, "tool": "gh" + bad})
		},
		"mint dataset": func(bad string) resp {
			return mintWith(e, "agent-1", approved, map[string]any{"scopes": []string{"github.repo.read:acme/api"},
				"audience": apiGitHub, "dataset": "orders" + bad})
		},
		"task deny reason": func(bad string) resp {
			return e.do("POST", "/v1/tasks/"+pending+"/deny", e.user("alice", "eng"), map[string]any{"reason": "no" + bad})
		},
		"step-up deny reason": func(bad string) resp {
			return e.do("POST", "/v1/approvals/"+apr+"/deny", e.user("alice", "eng"), map[string]any{"reason": "no" + bad})
		},
		"AuthZEN tool": func(bad string) resp {
			return e.evaluate(e.resource("gateway"), azBody(at, "github.repo.read", "acme/api", map[string]any{"tool": "gh" + bad}))
		},
		"AuthZEN dataset": func(bad string) resp {
			return e.evaluate(e.resource("gateway"), azBody(at, "github.repo.read", "acme/api", map[string]any{"dataset": "orders" + bad}))
		},
	}
	for field, send := range fields {
		for name, bad := range displayUnsafe {
			t.Run(field+"/"+name, func(t *testing.T) {
				e.t = t
				before := e.snapshot()
				e.refused(before, send(bad), http.StatusBadRequest, "invalid_request")
			})
		}
	}
	e.t = t
	// Nothing was decided by the refusals: the task is still pending and
	// the step-up still waits.
	if got := e.mustStatus(e.do("GET", "/v1/tasks/"+pending, e.user("alice", "eng"), nil), 200).str("status"); got != "pending" {
		t.Fatalf("task %s", got)
	}
	if got := e.mustStatus(e.do("GET", "/v1/approvals/"+apr, e.user("alice", "eng"), nil), 200).str("status"); got != "pending" {
		t.Fatalf("approval %s", got)
	}
}
