package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
)

// Payload is the standard body of a notification: the Standard Webhooks
// shape {type, timestamp, data}.
type Payload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is what a notification says. Summary and URL are Errand's words;
// the fields named agent_* are the agent's own words, untrusted, shown
// apart; DenyReason is the denying user's words (or Errand's, when the
// approval window elapsed or the agent was suspended). No field carries
// a credential.
type Data struct {
	Summary string `json:"summary"`
	// URL is the page where a person acts on the task or the approval.
	URL            string       `json:"url"`
	TaskID         string       `json:"task_id"`
	Status         string       `json:"status"`
	Agent          string       `json:"agent"`
	OnBehalfOf     string       `json:"on_behalf_of"`
	Actor          broker.Actor `json:"actor"`
	Risk           string       `json:"risk"`
	Scopes         []string     `json:"scopes"`
	Audiences      []string     `json:"audiences"`
	ApprovedScopes []string     `json:"approved_scopes,omitempty"`
	ExpiresAt      time.Time    `json:"expires_at"`
	AgentGoal      string       `json:"agent_goal"`
	AgentTool      string       `json:"agent_tool,omitempty"`
	AgentDataset   string       `json:"agent_dataset,omitempty"`
	DenyReason     string       `json:"deny_reason,omitempty"`
	Revoked        *int         `json:"revoked,omitempty"`
	Approval       *Approval    `json:"approval,omitempty"`
	Backend        *Backend     `json:"backend,omitempty"`
}

// Approval is the step-up approval of approval.requested: one exact
// request within an approved task.
type Approval struct {
	ID           string    `json:"id"`
	Scopes       []string  `json:"scopes"`
	Audience     string    `json:"audience"`
	AgentTool    string    `json:"agent_tool,omitempty"`
	AgentDataset string    `json:"agent_dataset,omitempty"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// Backend is the unconfirmed revocation of backend.revoke_failed; the
// revoked reference (a lease id, a token accessor) is never included.
type Backend struct {
	Kind     string    `json:"kind"`
	Attempts int       `json:"attempts"`
	Since    time.Time `json:"since"`
}

// TaskURL and ApprovalURL are the pages where a person acts.
func TaskURL(publicURL, taskID string) string {
	return strings.TrimRight(publicURL, "/") + "/ui/tasks/" + taskID
}

// ApprovalURL is the page of a step-up approval.
func ApprovalURL(publicURL, approvalID string) string {
	return strings.TrimRight(publicURL, "/") + "/ui/approvals/" + approvalID
}

// NewPayload is the standard payload of a notice.
func NewPayload(n broker.Notice, publicURL string) Payload {
	d := Data{
		TaskID: n.TaskID, Status: string(n.Status), Agent: n.Agent, OnBehalfOf: n.User, Actor: n.Actor,
		Risk: string(n.Risk), Scopes: nonNil(n.Scopes), Audiences: nonNil(n.Audiences),
		ApprovedScopes: n.ApprovedScopes, ExpiresAt: n.ExpiresAt,
		AgentGoal: n.Goal, AgentTool: n.Tool, AgentDataset: n.Dataset,
		URL: TaskURL(publicURL, n.TaskID),
	}
	switch n.Type {
	case broker.EventTaskDenied:
		d.DenyReason = n.Reason
	case broker.EventTaskClosed:
		d.Revoked = &n.Revoked
	case broker.EventApprovalRequested:
		d.URL = ApprovalURL(publicURL, n.ApprovalID)
		d.Approval = &Approval{ID: n.ApprovalID, Scopes: nonNil(n.ApprovalScopes), Audience: n.ApprovalAudience,
			AgentTool: n.ApprovalTool, AgentDataset: n.ApprovalDataset, ExpiresAt: n.ApprovalExpiresAt}
	case broker.EventBackendRevokeFail:
		d.Backend = &Backend{Kind: n.BackendKind, Attempts: n.BackendAttempts, Since: n.BackendSince}
	}
	d.Summary = sentence(n) + " " + action(n) + ": " + d.URL
	return Payload{Type: n.Type, Timestamp: n.Time, Data: d}
}

// sentence is Errand's one sentence about a notice: it names principals,
// counts and states, and never quotes the agent's words.
func sentence(n broker.Notice) string {
	by := actorName(n.Actor)
	switch n.Type {
	case broker.EventTaskCreated:
		return fmt.Sprintf("Agent %s asks to act for %s: %s on %s, risk %s.",
			n.Agent, n.User, plural(len(n.Scopes), "scope"), plural(len(n.Audiences), "audience"), n.Risk)
	case broker.EventApprovalRequested:
		return fmt.Sprintf("Agent %s asks %s to approve one request of task %s: %s for %s.",
			n.Agent, n.User, n.TaskID, plural(len(n.ApprovalScopes), "scope"), n.ApprovalAudience)
	case broker.EventTaskApproved:
		return fmt.Sprintf("%s approved task %s of agent %s: %s.", by, n.TaskID, n.Agent, plural(len(n.ApprovedScopes), "scope"))
	case broker.EventTaskDenied:
		return fmt.Sprintf("Task %s of agent %s was denied by %s.", n.TaskID, n.Agent, by)
	case broker.EventTaskClosed:
		return fmt.Sprintf("Task %s of agent %s was closed by %s; %s revoked.", n.TaskID, n.Agent, by, plural(n.Revoked, "credential"))
	case broker.EventBackendRevokeFail:
		return fmt.Sprintf("A %s revocation of task %s is still unconfirmed after %s; Errand keeps retrying.",
			n.BackendKind, n.TaskID, plural(n.BackendAttempts, "attempt"))
	}
	return fmt.Sprintf("%s on task %s.", n.Type, n.TaskID)
}

// action is what the link invites a person to do.
func action(n broker.Notice) string {
	if n.Type == broker.EventTaskCreated || n.Type == broker.EventApprovalRequested {
		return "Approve or deny"
	}
	return "Open"
}

func actorName(a broker.Actor) string {
	switch {
	case a.Kind == "system":
		return "Errand"
	case a.Subject != "":
		return a.Subject
	}
	return a.Kind
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// SlackMessage is a Slack-compatible incoming-webhook message: Errand's
// summary with the link, then the agent's words quoted and labelled as
// theirs. Every piece of text is escaped (&, <, >), so that nothing the
// agent (or anyone) wrote can become a link, a mention or a channel
// ping; only the link Errand makes is one.
type SlackMessage struct {
	Text string `json:"text"`
}

// maxSlackQuote bounds each quoted field of a Slack message.
const maxSlackQuote = 500

// NewSlackMessage is the Slack message of a notice.
func NewSlackMessage(n broker.Notice, publicURL string) SlackMessage {
	p := NewPayload(n, publicURL)
	d := p.Data
	var b strings.Builder
	what := "task " + d.TaskID
	if d.Approval != nil {
		what = "approval " + d.Approval.ID
	}
	fmt.Fprintf(&b, "*Errand*: %s <%s|%s>", SlackEscape(sentence(n)), d.URL, SlackEscape(action(n)+" "+what))
	quote := func(name, v string) {
		if v == "" {
			return
		}
		if len(v) > maxSlackQuote {
			v = truncate(v, maxSlackQuote) + "…"
		}
		fmt.Fprintf(&b, "\n%s, in the agent's own words:", name)
		for _, line := range strings.Split(v, "\n") {
			b.WriteString("\n> " + SlackEscape(line))
		}
	}
	if n.Type == broker.EventTaskCreated || n.Type == broker.EventApprovalRequested {
		quote("Goal", d.AgentGoal)
		quote("Tool", d.AgentTool)
		quote("Dataset", d.AgentDataset)
		if d.Approval != nil {
			quote("Tool of this request", d.Approval.AgentTool)
			quote("Dataset of this request", d.Approval.AgentDataset)
		}
	}
	if d.DenyReason != "" {
		if len(d.DenyReason) > maxSlackQuote {
			d.DenyReason = truncate(d.DenyReason, maxSlackQuote) + "…"
		}
		b.WriteString("\nReason given:")
		for _, line := range strings.Split(d.DenyReason, "\n") {
			b.WriteString("\n> " + SlackEscape(line))
		}
	}
	return SlackMessage{Text: b.String()}
}

// SlackEscape escapes Slack's control characters in message text (&, <
// and >), as Slack's formatting reference asks: what follows can then
// never be read as a link, a user or channel mention, or @here.
func SlackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// Body is the body of a notice in a webhook's format.
func Body(n broker.Notice, format, publicURL string) ([]byte, error) {
	if format == FormatSlack {
		return json.Marshal(NewSlackMessage(n, publicURL))
	}
	return json.Marshal(NewPayload(n, publicURL))
}
