// Package client is a small Go client of Errand's v1 REST API, used by the
// errand CLI. Refusals come back as *Problem errors carrying the stable code.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls one Errand server with one identity token.
type Client struct {
	Server string
	Token  string
	HTTP   *http.Client
}

// New returns a client with a 30 s timeout.
func New(server, token string) *Client {
	return &Client{Server: strings.TrimSuffix(server, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Problem is an RFC 9457 refusal.
type Problem struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Title  string `json:"title"`
	// ApprovalID names the step-up approval an approval_required refusal
	// waits for, Reasons are the texts of its @step_up policies, and
	// Policies are the ids of the policies behind a policy_denied or
	// approval_required refusal.
	ApprovalID string   `json:"approval_id"`
	Policies   []string `json:"policies"`
	Reasons    []string `json:"reasons"`
	// ApprovalURL is the page where the user decides ApprovalID.
	ApprovalURL string `json:"approval_url"`
	// Raw is the problem document as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// Error is one line: the status, the code and the detail, and, for an
// approval_required refusal, the approval to ask the user for and why
// (when the detail does not already say so).
func (p *Problem) Error() string {
	msg := fmt.Sprintf("%d %s", p.Status, p.Code)
	if p.Detail != "" {
		msg += ": " + p.Detail
	}
	var missing []string
	for _, r := range p.Reasons {
		if !strings.Contains(p.Detail, r) {
			missing = append(missing, r)
		}
	}
	switch {
	case p.ApprovalID != "" && !strings.Contains(p.Detail, p.ApprovalID):
		extra := "approval " + p.ApprovalID
		if len(p.Reasons) > 0 {
			extra += ": " + strings.Join(p.Reasons, "; ")
		}
		msg += " (" + extra + ")"
	case len(missing) > 0:
		msg += " (" + strings.Join(missing, "; ") + ")"
	}
	if p.ApprovalURL != "" {
		msg += "; the user decides at " + p.ApprovalURL
	}
	return msg
}

// Task is a task as the API renders it.
type Task struct {
	ID                string   `json:"id"`
	Status            string   `json:"status"`
	Version           int      `json:"version"`
	Digest            string   `json:"digest"`
	Agent             string   `json:"agent"`
	OnBehalfOf        string   `json:"on_behalf_of"`
	Goal              string   `json:"goal"`
	Scopes            []string `json:"scopes"`
	ApprovedScopes    []string `json:"approved_scopes"`
	Audiences         []string `json:"audiences"`
	ApprovedAudiences []string `json:"approved_audiences"`
	Risk              string   `json:"risk"`
	Tool              string   `json:"tool,omitempty"`
	Dataset           string   `json:"dataset,omitempty"`
	TTLCapped         bool     `json:"ttl_capped"`
	DenyReason        string   `json:"deny_reason,omitempty"`
	CreatedAt         string   `json:"created_at"`
	ApprovedAt        *string  `json:"approved_at"`
	ExpiresAt         string   `json:"expires_at"`
	ClosedAt          *string  `json:"closed_at"`
	Revoked           *int     `json:"revoked,omitempty"`
	// MaxCredentials and MaxResources are the task's budget (0: none).
	MaxCredentials int `json:"max_credentials,omitempty"`
	MaxResources   int `json:"max_resources,omitempty"`

	// ScopeDetails are the class and risk of each scope and approved
	// scope, from the server's action catalog.
	ScopeDetails []ScopeDetail `json:"scope_details"`
}

// ScopeDetail is what the action catalog says of a scope; Class and Risk
// are empty when its action has left the catalog.
type ScopeDetail struct {
	Scope string `json:"scope"`
	Class string `json:"class,omitempty"`
	Risk  string `json:"risk,omitempty"`
	// Description is the action's, from the catalog.
	Description string `json:"description,omitempty"`
}

// CreateTask is the body of POST /v1/tasks.
type CreateTask struct {
	OnBehalfOf string   `json:"on_behalf_of"`
	Goal       string   `json:"goal"`
	Scopes     []string `json:"scopes"`
	Audiences  []string `json:"audiences"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"`
	Tool       string   `json:"tool,omitempty"`
	Dataset    string   `json:"dataset,omitempty"`
	// MaxCredentials and MaxResources lower the configured budget: how
	// many credentials the task may mint, over how many distinct resources.
	MaxCredentials int `json:"max_credentials,omitempty"`
	MaxResources   int `json:"max_resources,omitempty"`
}

// Approve is the body of POST /v1/tasks/{id}/approve.
type Approve struct {
	Scopes     []string `json:"scopes,omitempty"`
	Audiences  []string `json:"audiences,omitempty"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"`
	// Version and Digest bind the approval to the task as shown: the
	// server refuses it (task_changed) if the task is no longer so.
	Version int    `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// Mint is the body of POST /v1/tasks/{id}/tokens.
type Mint struct {
	Scopes     []string `json:"scopes"`
	Audience   string   `json:"audience"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"`
	Tool       string   `json:"tool,omitempty"`
	Dataset    string   `json:"dataset,omitempty"`
}

// Token is a minted access token.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
	JTI         string `json:"jti"`
	TaskID      string `json:"task_id"`
	Audience    string `json:"audience"`
}

// Event is an audit event.
type Event struct {
	Seq    int64           `json:"seq"`
	Time   string          `json:"time"`
	Type   string          `json:"type"`
	Actor  map[string]any  `json:"actor"`
	TaskID string          `json:"task_id,omitempty"`
	Detail json.RawMessage `json:"detail"`
	Hash   string          `json:"hash"`
}

// Credential is an issuance record.
type Credential struct {
	JTI        string   `json:"jti"`
	Kind       string   `json:"kind"`
	TaskID     string   `json:"task_id"`
	Agent      string   `json:"agent"`
	OnBehalfOf string   `json:"on_behalf_of"`
	Scopes     []string `json:"scopes"`
	Audience   string   `json:"audience"`
	IssuedAt   string   `json:"issued_at"`
	ExpiresAt  string   `json:"expires_at"`
	RevokedAt  *string  `json:"revoked_at"`
}

// Approval is a step-up approval: one exact request of an approved task
// that a @step_up policy asks the user to approve first.
type Approval struct {
	ID         string   `json:"id"`
	TaskID     string   `json:"task_id"`
	Status     string   `json:"status"`
	Agent      string   `json:"agent"`
	OnBehalfOf string   `json:"on_behalf_of"`
	Scopes     []string `json:"scopes"`
	Audience   string   `json:"audience"`
	Tool       string   `json:"tool,omitempty"`
	Dataset    string   `json:"dataset,omitempty"`
	Policies   []string `json:"policies"`
	Reasons    []string `json:"reasons"`
	DenyReason string   `json:"deny_reason,omitempty"`
	CreatedAt  string   `json:"created_at"`
	ExpiresAt  string   `json:"expires_at"`
	DecidedAt  *string  `json:"decided_at"`
	UsedAt     *string  `json:"used_at"`

	// ScopeDetails are the class and risk of each scope, from the
	// server's action catalog.
	ScopeDetails []ScopeDetail `json:"scope_details"`
}

// Decision is an AuthZEN access decision.
type Decision struct {
	Allow    bool
	Reason   string
	Policies []string
}

// Do sends a request with a JSON body (or form values) and decodes a JSON
// answer into out; the raw answer is returned too.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) ([]byte, error) {
	var body io.Reader
	ctype := ""
	switch v := in.(type) {
	case nil:
	case url.Values:
		body, ctype = strings.NewReader(v.Encode()), "application/x-www-form-urlencoded"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", c.Server, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		p := &Problem{Status: res.StatusCode}
		if json.Unmarshal(raw, p) != nil || p.Code == "" {
			p.Code, p.Detail = "http_error", strings.TrimSpace(string(raw))
		}
		p.Status, p.Raw = res.StatusCode, raw
		return raw, p
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("unexpected answer from %s: %w", path, err)
		}
	}
	return raw, nil
}

func taskPath(id string, action string) string {
	p := "/v1/tasks/" + url.PathEscape(id)
	if action != "" {
		p += "/" + action
	}
	return p
}

// CreateTask asks for a task (agent).
func (c *Client) CreateTask(ctx context.Context, req CreateTask) (Task, []byte, error) {
	var t Task
	raw, err := c.Do(ctx, http.MethodPost, "/v1/tasks", req, &t)
	return t, raw, err
}

// ListTasks lists the caller's tasks, optionally by status.
func (c *Client) ListTasks(ctx context.Context, status string) ([]Task, []byte, error) {
	var out struct{ Tasks []Task }
	path := "/v1/tasks"
	if status != "" {
		path += "?status=" + url.QueryEscape(status)
	}
	raw, err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return out.Tasks, raw, err
}

// GetTask reads a task.
func (c *Client) GetTask(ctx context.Context, id string) (Task, []byte, error) {
	var t Task
	raw, err := c.Do(ctx, http.MethodGet, taskPath(id, ""), nil, &t)
	return t, raw, err
}

// Approve approves a task (its user).
func (c *Client) Approve(ctx context.Context, id string, req Approve) (Task, []byte, error) {
	var t Task
	raw, err := c.Do(ctx, http.MethodPost, taskPath(id, "approve"), req, &t)
	return t, raw, err
}

// Deny denies a task (its user).
func (c *Client) Deny(ctx context.Context, id, reason string) (Task, []byte, error) {
	var t Task
	raw, err := c.Do(ctx, http.MethodPost, taskPath(id, "deny"), map[string]string{"reason": reason}, &t)
	return t, raw, err
}

// Close closes a task (its agent or user).
func (c *Client) Close(ctx context.Context, id string) (Task, []byte, error) {
	var t Task
	raw, err := c.Do(ctx, http.MethodPost, taskPath(id, "close"), map[string]string{}, &t)
	return t, raw, err
}

// Mint mints an access token (the task's agent).
func (c *Client) Mint(ctx context.Context, id string, req Mint) (Token, []byte, error) {
	var t Token
	raw, err := c.Do(ctx, http.MethodPost, taskPath(id, "tokens"), req, &t)
	return t, raw, err
}

// Introspect asks whether token is active (a resource server).
func (c *Client) Introspect(ctx context.Context, token string) (map[string]any, []byte, error) {
	var out map[string]any
	raw, err := c.Do(ctx, http.MethodPost, "/v1/introspect", url.Values{"token": {token}}, &out)
	return out, raw, err
}

func approvalPath(id, action string) string {
	p := "/v1/approvals/" + url.PathEscape(id)
	if action != "" {
		p += "/" + action
	}
	return p
}

// ListApprovals lists the caller's step-up approvals (a user's to decide,
// an agent's to wait for), optionally by status, from cursor on; it
// returns the next page's cursor when there is one.
func (c *Client) ListApprovals(ctx context.Context, status, cursor string) ([]Approval, string, []byte, error) {
	var out struct {
		Approvals  []Approval
		NextCursor string `json:"next_cursor"`
	}
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	path := "/v1/approvals"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	raw, err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return out.Approvals, out.NextCursor, raw, err
}

// GetApproval reads a step-up approval.
func (c *Client) GetApproval(ctx context.Context, id string) (Approval, []byte, error) {
	var a Approval
	raw, err := c.Do(ctx, http.MethodGet, approvalPath(id, ""), nil, &a)
	return a, raw, err
}

// ApproveApproval approves a step-up approval (the task's user).
func (c *Client) ApproveApproval(ctx context.Context, id string) (Approval, []byte, error) {
	var a Approval
	raw, err := c.Do(ctx, http.MethodPost, approvalPath(id, "approve"), map[string]string{}, &a)
	return a, raw, err
}

// DenyApproval denies a step-up approval (the task's user).
func (c *Client) DenyApproval(ctx context.Context, id, reason string) (Approval, []byte, error) {
	var a Approval
	raw, err := c.Do(ctx, http.MethodPost, approvalPath(id, "deny"), map[string]string{"reason": reason}, &a)
	return a, raw, err
}

// Evaluate asks the AuthZEN access evaluation API whether the bearer of
// token may do action on resourceType resourceID (a resource server); tool
// and dataset go in the context when set.
func (c *Client) Evaluate(ctx context.Context, token, action, resourceType, resourceID, tool, dataset string) (Decision, []byte, error) {
	in := map[string]any{
		"subject":  map[string]string{"type": "errand_token", "id": token},
		"action":   map[string]string{"name": action},
		"resource": map[string]string{"type": resourceType, "id": resourceID},
	}
	ctxt := map[string]string{}
	if tool != "" {
		ctxt["tool"] = tool
	}
	if dataset != "" {
		ctxt["dataset"] = dataset
	}
	if len(ctxt) > 0 {
		in["context"] = ctxt
	}
	var out struct {
		Decision bool `json:"decision"`
		Context  struct {
			ReasonAdmin struct {
				En string `json:"en"`
			} `json:"reason_admin"`
			Policies []string `json:"policies"`
		} `json:"context"`
	}
	raw, err := c.Do(ctx, http.MethodPost, "/access/v1/evaluation", in, &out)
	return Decision{Allow: out.Decision, Reason: out.Context.ReasonAdmin.En, Policies: out.Context.Policies}, raw, err
}

// AuditEvents reads audit events (an auditor).
func (c *Client) AuditEvents(ctx context.Context, q url.Values) ([]Event, string, []byte, error) {
	var out struct {
		Events     []Event
		NextCursor string `json:"next_cursor"`
	}
	raw, err := c.Do(ctx, http.MethodGet, "/v1/audit/events?"+q.Encode(), nil, &out)
	return out.Events, out.NextCursor, raw, err
}

// Credentials reads the issuance history (an auditor).
func (c *Client) Credentials(ctx context.Context, q url.Values) ([]Credential, string, []byte, error) {
	var out struct {
		Credentials []Credential
		NextCursor  string `json:"next_cursor"`
	}
	raw, err := c.Do(ctx, http.MethodGet, "/v1/credentials?"+q.Encode(), nil, &out)
	return out.Credentials, out.NextCursor, raw, err
}

// DevToken asks `errand dev`'s identity provider for an ID token.
func (c *Client) DevToken(ctx context.Context, kind, sub string, groups []string) (string, error) {
	var out struct {
		IDToken string `json:"id_token"`
	}
	_, err := c.Do(ctx, http.MethodPost, "/dev/token", map[string]any{"kind": kind, "sub": sub, "groups": groups}, &out)
	return out.IDToken, err
}
