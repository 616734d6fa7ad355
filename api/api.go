// Package api holds the JSON shapes of Errand's v1 REST API, the one
// definition that the server (httpapi) writes and reads and that the Go
// client (client) sends and decodes, so that the two cannot drift. It
// imports nothing but the standard library; openapi.yaml is the contract
// these shapes are held to (httpapi's tests check every answer against
// it).
//
// Request bodies mark optional fields omitempty: the server reads an
// absent field and a zero one alike.
package api

import "encoding/json"

// ScopeDetail is what the action catalog says of a scope: its action's
// class and risk, absent when the action has left the catalog.
type ScopeDetail struct {
	Scope string `json:"scope"`
	Class string `json:"class,omitempty"`
	Risk  string `json:"risk,omitempty"`
	// Description is the action's, from the catalog.
	Description string `json:"description,omitempty"`
}

// Task is a task as GET /v1/tasks/{id} and every task answer render it.
type Task struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// Version and Digest name what the user saw: an approval or denial
	// carrying them is refused if the task changed since.
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
	// MaxCredentials and MaxResources are the task's budget; absent when
	// unlimited.
	MaxCredentials int `json:"max_credentials,omitempty"`
	MaxResources   int `json:"max_resources,omitempty"`
	// RequireDPoP: every token of the task is DPoP-bound.
	RequireDPoP bool `json:"require_dpop"`

	// ScopeDetails are the class and risk of each scope and approved
	// scope, from the catalog.
	ScopeDetails []ScopeDetail `json:"scope_details"`
}

// ClosedTask is the answer of POST /v1/tasks/{id}/close: the task and how
// many credentials the close revoked.
type ClosedTask struct {
	Task
	Revoked int `json:"revoked"`
}

// TaskList is a page of GET /v1/tasks.
type TaskList struct {
	Tasks      []Task `json:"tasks"`
	NextCursor string `json:"next_cursor,omitempty"`
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
	// RequireDPoP makes every token of the task DPoP-bound.
	RequireDPoP bool `json:"require_dpop,omitempty"`
}

// Approve is the body of POST /v1/tasks/{id}/approve; every field may only
// narrow the request. Version and Digest, from the task the user saw,
// make the approval refused if the task changed since.
type Approve struct {
	Scopes     []string `json:"scopes,omitempty"`
	Audiences  []string `json:"audiences,omitempty"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"`
	Version    int      `json:"version,omitempty"`
	Digest     string   `json:"digest,omitempty"`
}

// Deny is the body of POST /v1/tasks/{id}/deny.
type Deny struct {
	Reason  string `json:"reason"`
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

// Token is a minted access token (201 of POST /v1/tasks/{id}/tokens).
type Token struct {
	AccessToken     string `json:"access_token"`
	Audience        string `json:"audience"`
	ExpiresIn       int64  `json:"expires_in"`
	IssuedTokenType string `json:"issued_token_type"`
	JTI             string `json:"jti"`
	Scope           string `json:"scope"`
	TaskID          string `json:"task_id"`
	// TokenType is Bearer, or DPoP for a token bound to a key.
	TokenType string `json:"token_type"`
}

// SecretRequest is the body of POST /v1/tasks/{id}/secrets.
type SecretRequest struct {
	Role string `json:"role"`
}

// Secret is a Vault dynamic secret: its data and lease metadata, never a
// Vault token.
type Secret struct {
	Data          map[string]any `json:"data"`
	LeaseDuration int64          `json:"lease_duration"`
	LeaseID       string         `json:"lease_id"`
	Renewable     bool           `json:"renewable"`
}

// Actor is who did what an audit event records.
type Actor struct {
	Kind    string `json:"kind"`
	Issuer  string `json:"iss,omitempty"`
	Subject string `json:"sub,omitempty"`
}

// Event is an audit event.
type Event struct {
	Seq    int64           `json:"seq"`
	Time   string          `json:"time"`
	Type   string          `json:"type"`
	Actor  Actor           `json:"actor"`
	TaskID string          `json:"task_id,omitempty"`
	Detail json.RawMessage `json:"detail"`
	Hash   string          `json:"hash"`
}

// EventList is a page of GET /v1/audit/events.
type EventList struct {
	Events     []Event `json:"events"`
	NextCursor string  `json:"next_cursor,omitempty"`
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

// CredentialList is a page of GET /v1/credentials.
type CredentialList struct {
	Credentials []Credential `json:"credentials"`
	NextCursor  string       `json:"next_cursor,omitempty"`
}

// History is one task's timeline (GET /v1/tasks/{id}/history).
type History struct {
	Task        Task         `json:"task"`
	Events      []Event      `json:"events"`
	Credentials []Credential `json:"credentials"`
	// Truncated: the timeline holds more than the answer shows.
	Truncated bool `json:"truncated"`
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

	// ScopeDetails are the class and risk of each scope, from the catalog.
	ScopeDetails []ScopeDetail `json:"scope_details"`
}

// ApprovalList is a page of GET /v1/approvals.
type ApprovalList struct {
	Approvals  []Approval `json:"approvals"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// Revocation is one entry of the revocation feed.
type Revocation struct {
	Seq       int64  `json:"seq"`
	JTI       string `json:"jti"`
	TaskID    string `json:"task_id"`
	RevokedAt string `json:"revoked_at"`
	Reason    string `json:"reason"`
}

// RevocationPage is a page of GET /v1/revocations; NextCursor moves past
// the entries of audiences the caller may not see too.
type RevocationPage struct {
	Revocations []Revocation `json:"revocations"`
	NextCursor  string       `json:"next_cursor"`
}

// Act is RFC 8693's act claim: the agent acting for the user.
type Act struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
}

// Confirmation is RFC 7800's cnf with RFC 9449's jkt: the thumbprint of
// the key whose DPoP proofs must accompany the token.
type Confirmation struct {
	JKT string `json:"jkt"`
}

// Introspection is RFC 7662's answer for an active token (an inactive one
// is exactly {"active": false}).
type Introspection struct {
	Active   bool   `json:"active"`
	Act      Act    `json:"act"`
	Aud      string `json:"aud"`
	ClientID string `json:"client_id"`
	// Cnf is the key a DPoP-bound token is bound to; absent for a bearer
	// token.
	Cnf       *Confirmation `json:"cnf,omitempty"`
	Exp       int64         `json:"exp"`
	Iat       int64         `json:"iat"`
	Iss       string        `json:"iss"`
	JTI       string        `json:"jti"`
	Nbf       int64         `json:"nbf"`
	Scope     string        `json:"scope"`
	Sub       string        `json:"sub"`
	TaskID    string        `json:"task_id"`
	TokenType string        `json:"token_type"`
}

// TokenResponse is the token endpoint's answer (RFC 6749 §5.1), with RFC
// 8693 §2.2.1's issued_token_type and RFC 9396 §7's authorization_details
// naming the task, so that a client learns the task it exchanges for
// further tokens.
type TokenResponse struct {
	AccessToken          string       `json:"access_token"`
	IssuedTokenType      string       `json:"issued_token_type"`
	TokenType            string       `json:"token_type"`
	ExpiresIn            int64        `json:"expires_in"`
	Scope                string       `json:"scope"`
	AuthorizationDetails []TaskDetail `json:"authorization_details"`
}

// TaskDetail is an RFC 9396 authorization detail of type errand_task.
type TaskDetail struct {
	Type   string `json:"type"`
	TaskID string `json:"task_id"`
}

// OAuthError is an RFC 6749 §5.2 error answer of the OAuth endpoints, with
// Errand's code.
type OAuthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	Code             string `json:"code"`
	// ApprovalID names the step-up approval an approval_required refusal
	// waits for.
	ApprovalID string `json:"approval_id,omitempty"`
	// ApprovalURL is the page where the user decides it.
	ApprovalURL string `json:"approval_url,omitempty"`
}

// Evaluation is an AuthZEN access evaluation's answer: the decision, and
// in its context the reason for an administrator and the policies behind
// it.
type Evaluation struct {
	Decision bool              `json:"decision"`
	Context  EvaluationContext `json:"context"`
}

// EvaluationContext is an Evaluation's context.
type EvaluationContext struct {
	ReasonAdmin Reason   `json:"reason_admin"`
	Policies    []string `json:"policies,omitempty"`
}

// Reason is an AuthZEN reason, in English.
type Reason struct {
	En string `json:"en"`
}
