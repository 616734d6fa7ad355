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
}

func (p *Problem) Error() string {
	msg := fmt.Sprintf("%d %s", p.Status, p.Code)
	if p.Detail != "" {
		msg += ": " + p.Detail
	}
	return msg
}

// Task is a task as the API renders it.
type Task struct {
	ID                string   `json:"id"`
	Status            string   `json:"status"`
	Version           int      `json:"version"`
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
}

// Approve is the body of POST /v1/tasks/{id}/approve.
type Approve struct {
	Scopes     []string `json:"scopes,omitempty"`
	Audiences  []string `json:"audiences,omitempty"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"`
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
		p.Status = res.StatusCode
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
