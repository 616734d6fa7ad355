// Package client is Errand's Go client for agents, users and auditors,
// used by the errand CLI. Refusals come back as *Problem errors carrying
// the stable code.
//
// A Client authenticates every call with a workload (or user) ID token
// from its Source: StaticToken, FileToken (re-read when the file changes,
// as Kubernetes rotates projected service-account tokens),
// GitHubActionsToken (the Actions OIDC endpoint) or CommandToken. Calls
// that are safe to repeat (reads, RFC 7009 revocation, and mints, which
// carry an automatic Idempotency-Key) are retried on 429 and 503 and on
// network errors, waiting as Retry-After says, else with capped
// exponential backoff and jitter. Other calls are sent once.
package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/dpop"
)

// Client calls one Errand server as one identity.
type Client struct {
	Server string
	// Token is a fixed identity token, used when Source is nil.
	Token string
	// Source yields the identity token of each call.
	Source TokenSource
	HTTP   *http.Client
	// Retry bounds the retries of calls safe to repeat.
	Retry Retry
	// DPoPKey, when set, binds every minted token to this key (RFC 9449):
	// each mint carries a fresh DPoP proof of it.
	DPoPKey crypto.Signer

	mu    sync.Mutex
	nonce string // the last DPoP-Nonce the server sent
}

// Retry bounds the retries of a call safe to repeat.
type Retry struct {
	// Attempts is how many times a call is sent at most; default 4, 1
	// turns retries off.
	Attempts int
	// Base and Max bound the backoff between attempts when the server
	// names no Retry-After: Base·2ⁿ with full jitter, at most Max;
	// defaults 200 ms and 5 s.
	Base, Max time.Duration
	// MaxRetryAfter is the longest Retry-After waited for; a longer one
	// returns the refusal at once. Default 30 s.
	MaxRetryAfter time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.Base <= 0 {
		r.Base = 200 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 5 * time.Second
	}
	if r.MaxRetryAfter <= 0 {
		r.MaxRetryAfter = 30 * time.Second
	}
	return r
}

// New returns a client with a fixed token and a 30 s timeout per attempt.
func New(server, token string) *Client {
	return &Client{Server: strings.TrimSuffix(server, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// NewWithSource returns a client whose calls take their token from src.
func NewWithSource(server string, src TokenSource) *Client {
	c := New(server, "")
	c.Source = src
	return c
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

// The wire types are package api's, which the server writes and reads
// too: the client cannot drift from it.
type (
	Task           = api.Task
	ClosedTask     = api.ClosedTask
	ScopeDetail    = api.ScopeDetail
	CreateTask     = api.CreateTask
	Approve        = api.Approve
	Deny           = api.Deny
	Mint           = api.Mint
	Token          = api.Token
	Secret         = api.Secret
	Event          = api.Event
	Credential     = api.Credential
	History        = api.History
	Approval       = api.Approval
	Introspection  = api.Introspection
	RevocationPage = api.RevocationPage
)

// Decision is an AuthZEN access decision.
type Decision struct {
	Allow    bool
	Reason   string
	Policies []string
}

// Do sends a request with a JSON body (or form values) and decodes a JSON
// answer into out; the raw answer is returned too. A GET is retried as
// Retry allows; any other method is sent once.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) ([]byte, error) {
	return c.do(ctx, call{method: method, path: path, in: in, out: out, idempotent: method == http.MethodGet})
}

// call is one API call.
type call struct {
	method, path string
	in, out      any
	// idempotent calls are retried.
	idempotent bool
	header     http.Header
	// dpop signs a proof for each attempt.
	dpop bool
}

func (c *Client) do(ctx context.Context, k call) ([]byte, error) {
	var body []byte
	ctype := ""
	switch v := k.in.(type) {
	case nil:
	case url.Values:
		body, ctype = []byte(v.Encode()), "application/x-www-form-urlencoded"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body, ctype = b, "application/json"
	}
	r := c.Retry.withDefaults()
	attempts := r.Attempts
	if !k.idempotent {
		attempts = 1
	}
	nonceRetried := false
	for attempt := 0; ; attempt++ {
		raw, res, err := c.once(ctx, k, body, ctype)
		if err == nil {
			return raw, nil
		}
		var p *Problem
		if errors.As(err, &p) && p.Code == "use_dpop_nonce" && k.dpop && !nonceRetried {
			nonceRetried, attempt = true, attempt-1 // RFC 9449 §8: once more, with the nonce
			continue
		}
		if attempt+1 >= attempts || ctx.Err() != nil {
			return raw, err
		}
		wait, retry := r.wait(attempt, res, err)
		if !retry {
			return raw, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return raw, err
		case <-t.C:
		}
	}
}

// wait says whether an attempt that failed with err (res, when the server
// answered) is retried, and after how long.
func (r Retry) wait(attempt int, res *http.Response, err error) (time.Duration, bool) {
	if res == nil {
		var p *Problem
		if errors.As(err, &p) {
			return 0, false
		}
		return r.backoff(attempt), true // the server was not reached
	}
	if res.StatusCode != http.StatusTooManyRequests && res.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	if d, ok := retryAfter(res.Header.Get("Retry-After"), time.Now()); ok {
		if d > r.MaxRetryAfter {
			return 0, false
		}
		return d, true
	}
	return r.backoff(attempt), true
}

func (r Retry) backoff(attempt int) time.Duration {
	d := r.Base << min(attempt, 20)
	if d <= 0 || d > r.Max {
		d = r.Max
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d)+1))
	if err != nil {
		return d
	}
	return time.Duration(n.Int64())
}

// retryAfter reads RFC 9110 §10.2.3: delay-seconds or an HTTP-date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// once sends one attempt. res is set when the server answered.
func (c *Client) once(ctx context.Context, k call, body []byte, ctype string) ([]byte, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, k.method, c.Server+k.path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body == nil {
		req.Body, req.ContentLength = nil, 0
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for name, vs := range k.header {
		req.Header[name] = vs
	}
	tok := c.Token
	if c.Source != nil {
		if tok, err = c.Source.Token(ctx); err != nil {
			return nil, nil, fmt.Errorf("identity token: %w", err)
		}
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if k.dpop && c.DPoPKey != nil {
		c.mu.Lock()
		nonce := c.nonce
		c.mu.Unlock()
		proof, err := dpop.NewProofWithNonce(c.DPoPKey, k.method, c.Server+k.path, "", nonce, time.Now())
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("DPoP", proof)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach %s: %w", c.Server, err)
	}
	defer res.Body.Close()
	if n := res.Header.Get("DPoP-Nonce"); n != "" {
		c.mu.Lock()
		c.nonce = n
		c.mu.Unlock()
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, res, err
	}
	if res.StatusCode >= 300 {
		p := &Problem{Status: res.StatusCode}
		if json.Unmarshal(raw, p) != nil || p.Code == "" {
			// The OAuth endpoints answer RFC 6749 §5.2 errors.
			var oe api.OAuthError
			if json.Unmarshal(raw, &oe) == nil && oe.Error != "" {
				p.Code, p.Detail = oe.Error, oe.ErrorDescription
			} else {
				p.Code, p.Detail = "http_error", strings.TrimSpace(string(raw))
			}
		}
		p.Status, p.Raw = res.StatusCode, raw
		return raw, res, p
	}
	if k.out != nil {
		if err := json.Unmarshal(raw, k.out); err != nil {
			return raw, res, fmt.Errorf("unexpected answer from %s: %w", k.path, err)
		}
	}
	return raw, res, nil
}

func taskPath(id string, action string) string {
	p := "/v1/tasks/" + url.PathEscape(id)
	if action != "" {
		p += "/" + action
	}
	return p
}

// CreateTask asks for a task (agent). It is sent once: a retry would ask
// twice.
func (c *Client) CreateTask(ctx context.Context, req CreateTask) (Task, []byte, error) {
	var t Task
	raw, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/tasks", in: req, out: &t})
	return t, raw, err
}

// ListTasks lists the caller's tasks, optionally by status.
func (c *Client) ListTasks(ctx context.Context, status string) ([]Task, []byte, error) {
	var out api.TaskList
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

// Approve approves a task (its user). Set req.Version and req.Digest from
// the task the user was shown (Seen) so that an approval of a task that
// changed since is refused (409 task_changed).
func (c *Client) Approve(ctx context.Context, id string, req Approve) (Task, []byte, error) {
	var t Task
	raw, err := c.do(ctx, call{method: http.MethodPost, path: taskPath(id, "approve"), in: req, out: &t})
	return t, raw, err
}

// Seen is an approval of exactly the task t the user was shown: its
// version and digest, nothing narrowed.
func Seen(t Task) Approve { return Approve{Version: t.Version, Digest: t.Digest} }

// Deny denies a task (its user).
func (c *Client) Deny(ctx context.Context, id, reason string) (Task, []byte, error) {
	return c.DenySeen(ctx, id, Deny{Reason: reason})
}

// DenySeen denies a task with the version and digest the user saw.
func (c *Client) DenySeen(ctx context.Context, id string, req Deny) (Task, []byte, error) {
	var t Task
	raw, err := c.do(ctx, call{method: http.MethodPost, path: taskPath(id, "deny"), in: req, out: &t})
	return t, raw, err
}

// Close closes a task (its agent or user): every credential of the task
// is revoked.
func (c *Client) Close(ctx context.Context, id string) (ClosedTask, []byte, error) {
	var t ClosedTask
	raw, err := c.do(ctx, call{method: http.MethodPost, path: taskPath(id, "close"), in: map[string]string{}, out: &t})
	return t, raw, err
}

// Mint mints an access token (the task's agent), DPoP-bound when DPoPKey
// is set. It carries a fresh Idempotency-Key, the same on every retry, so
// that a retried mint returns the one credential recorded.
func (c *Client) Mint(ctx context.Context, id string, req Mint) (Token, []byte, error) {
	key, err := idempotencyKey()
	if err != nil {
		return Token{}, nil, err
	}
	return c.MintWithKey(ctx, id, req, key)
}

// MintWithKey is Mint with the caller's Idempotency-Key: a mint repeated
// with the same key (after a crash, say) returns the same credential.
func (c *Client) MintWithKey(ctx context.Context, id string, req Mint, idempotencyKey string) (Token, []byte, error) {
	var t Token
	raw, err := c.do(ctx, call{method: http.MethodPost, path: taskPath(id, "tokens"), in: req, out: &t, idempotent: true,
		header: http.Header{"Idempotency-Key": {idempotencyKey}}, dpop: c.DPoPKey != nil})
	return t, raw, err
}

func idempotencyKey() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// IssueSecret asks for a Vault dynamic secret of role (the task's agent).
// It is sent once: each call creates a lease.
func (c *Client) IssueSecret(ctx context.Context, id, role string) (Secret, []byte, error) {
	var s Secret
	raw, err := c.do(ctx, call{method: http.MethodPost, path: taskPath(id, "secrets"), in: api.SecretRequest{Role: role}, out: &s})
	return s, raw, err
}

// History reads a task's timeline: the task, its audit events and its
// credentials.
func (c *Client) History(ctx context.Context, id string) (History, []byte, error) {
	var h History
	raw, err := c.Do(ctx, http.MethodGet, taskPath(id, "history"), nil, &h)
	return h, raw, err
}

// Revoke revokes one token (RFC 7009) as its agent or user. Revoking
// twice changes nothing, so it is retried.
func (c *Client) Revoke(ctx context.Context, token string) error {
	_, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/revoke", in: url.Values{"token": {token}}, idempotent: true})
	return err
}

// Introspect asks whether token is active (a resource server).
func (c *Client) Introspect(ctx context.Context, token string) (map[string]any, []byte, error) {
	var out map[string]any
	raw, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/introspect", in: url.Values{"token": {token}}, out: &out, idempotent: true})
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
	var out api.ApprovalList
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
	raw, err := c.do(ctx, call{method: http.MethodPost, path: approvalPath(id, "approve"), in: map[string]string{}, out: &a})
	return a, raw, err
}

// DenyApproval denies a step-up approval (the task's user).
func (c *Client) DenyApproval(ctx context.Context, id, reason string) (Approval, []byte, error) {
	var a Approval
	raw, err := c.do(ctx, call{method: http.MethodPost, path: approvalPath(id, "deny"), in: map[string]string{"reason": reason}, out: &a})
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
	var out api.Evaluation
	raw, err := c.Do(ctx, http.MethodPost, "/access/v1/evaluation", in, &out)
	return Decision{Allow: out.Decision, Reason: out.Context.ReasonAdmin.En, Policies: out.Context.Policies}, raw, err
}

// AuditEvents reads audit events (an auditor).
func (c *Client) AuditEvents(ctx context.Context, q url.Values) ([]Event, string, []byte, error) {
	var out api.EventList
	raw, err := c.Do(ctx, http.MethodGet, "/v1/audit/events?"+q.Encode(), nil, &out)
	return out.Events, out.NextCursor, raw, err
}

// Credentials reads the issuance history (an auditor).
func (c *Client) Credentials(ctx context.Context, q url.Values) ([]Credential, string, []byte, error) {
	var out api.CredentialList
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
