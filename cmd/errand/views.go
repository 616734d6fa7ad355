package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/errandhq/errand/client"
)

// Views for approvers (task get, approval get, and every command that
// prints a task or an approval) show first what is decided — scopes with
// their class and risk from the server's catalog, audiences, expiry —
// and only then, apart and quoted, the text the agent wrote: an agent's
// goal is the agent's claim about itself, never part of the decision, and
// no text of its own may pass for a line of the view (H09, R05).

// agentWordsHeading introduces the agent's own text at the end of a view.
const agentWordsHeading = "Agent's words (unverified, quoted as sent):"

// shown renders a value Errand vouches for (an id, a verified name, a
// catalog entry, a time) on its line of a view: as it is when every
// character is printable, quoted otherwise, so that no value can start a
// line or a column of its own.
func shown(s string) string {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// quoted renders text someone wrote (an agent's goal, tool or dataset, a
// reason) as a quotation: always in double quotes, with every control,
// formatting and bidirectional character escaped (strconv.Quote).
func quoted(s string) string { return strconv.Quote(s) }

// scopeLines prints scopes one per line under label, each with its class
// and risk from details.
func scopeLines(w io.Writer, label string, scopes []string, details []client.ScopeDetail) {
	if len(scopes) == 0 {
		fmt.Fprintf(w, "%s\t-\n", label)
		return
	}
	for i, sc := range scopes {
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", label, shown(sc), catalogNote(sc, details))
	}
}

func catalogNote(scope string, details []client.ScopeDetail) string {
	for _, d := range details {
		if d.Scope == scope && d.Class != "" {
			note := "(" + shown(d.Class) + ", risk " + shown(d.Risk) + ")"
			if d.Description != "" {
				note += " " + shown(d.Description)
			}
			return note
		}
	}
	return "(not in the catalog)"
}

// audienceList marks each requested audience approved or not once the
// task has been decided.
func audienceList(t client.Task) string {
	if len(t.Audiences) == 0 {
		return "-"
	}
	decided := t.ApprovedAt != nil
	out := make([]string, len(t.Audiences))
	for i, a := range t.Audiences {
		out[i] = shown(a)
		if !decided {
			continue
		}
		mark := " (not approved)"
		for _, b := range t.ApprovedAudiences {
			if a == b {
				mark = " (approved)"
			}
		}
		out[i] += mark
	}
	return strings.Join(out, " ")
}

// agentWords prints the agent's own labelled texts, quoted, after the
// heading; empty optional ones are left out.
func agentWords(w io.Writer, words ...[2]string) {
	fmt.Fprintln(w, agentWordsHeading)
	for _, kv := range words {
		if kv[0] != "goal" && kv[1] == "" {
			continue
		}
		fmt.Fprintf(w, "  %s\t%s\n", kv[0], quoted(kv[1]))
	}
}

func printTask(w io.Writer, t client.Task) { printTaskRevoked(w, t, nil) }

// printClosed is a closed task with how many credentials the close
// revoked.
func printClosed(w io.Writer, t client.ClosedTask) { printTaskRevoked(w, t.Task, &t.Revoked) }

func printTaskRevoked(w io.Writer, t client.Task, revoked *int) {
	fmt.Fprintf(w, "id\t%s\n", shown(t.ID))
	fmt.Fprintf(w, "status\t%s\n", shown(t.Status))
	fmt.Fprintf(w, "agent\t%s\n", shown(t.Agent))
	fmt.Fprintf(w, "on_behalf_of\t%s\n", shown(t.OnBehalfOf))
	fmt.Fprintf(w, "risk\t%s\n", shown(t.Risk))
	scopeLines(w, "scopes", t.Scopes, t.ScopeDetails)
	scopeLines(w, "approved_scopes", t.ApprovedScopes, t.ScopeDetails)
	fmt.Fprintf(w, "audiences\t%s\n", audienceList(t))
	fmt.Fprintf(w, "expires_at\t%s\n", when(t.ExpiresAt, time.Now()))
	if t.TTLCapped {
		fmt.Fprintf(w, "ttl_capped\ttrue (the requested ttl was longer than the maximum)\n")
	}
	if t.MaxCredentials > 0 {
		fmt.Fprintf(w, "max_credentials\t%d\n", t.MaxCredentials)
	}
	if t.MaxResources > 0 {
		fmt.Fprintf(w, "max_resources\t%d\n", t.MaxResources)
	}
	if revoked != nil {
		fmt.Fprintf(w, "revoked\t%d\n", *revoked)
	}
	if t.DenyReason != "" {
		fmt.Fprintf(w, "deny_reason\t%s\n", quoted(t.DenyReason))
	}
	agentWords(w, [2]string{"goal", t.Goal}, [2]string{"tool", t.Tool}, [2]string{"dataset", t.Dataset})
}

func printApproval(w io.Writer, a client.Approval) {
	fmt.Fprintf(w, "id\t%s\n", shown(a.ID))
	fmt.Fprintf(w, "status\t%s\n", shown(a.Status))
	fmt.Fprintf(w, "task\t%s\n", shown(a.TaskID))
	fmt.Fprintf(w, "agent\t%s\n", shown(a.Agent))
	fmt.Fprintf(w, "on_behalf_of\t%s\n", shown(a.OnBehalfOf))
	scopeLines(w, "scopes", a.Scopes, a.ScopeDetails)
	fmt.Fprintf(w, "audience\t%s\n", shown(a.Audience))
	fmt.Fprintf(w, "expires_at\t%s\n", when(a.ExpiresAt, time.Now()))
	fmt.Fprintf(w, "policies\t%s\n", shown(orDash(a.Policies)))
	fmt.Fprintf(w, "reasons\t%s\n", shown(reasons(a)))
	if a.DenyReason != "" {
		fmt.Fprintf(w, "deny_reason\t%s\n", quoted(a.DenyReason))
	}
	if a.Tool != "" || a.Dataset != "" {
		agentWords(w, [2]string{"tool", a.Tool}, [2]string{"dataset", a.Dataset})
	}
}
