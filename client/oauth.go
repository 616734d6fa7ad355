package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/errandhq/errand/api"
)

// TokenResponse is the OAuth token endpoint's answer.
type TokenResponse = api.TokenResponse

// OAuth names (RFC 8693, RFC 9396).
const (
	GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
)

// Exchange obtains a token of an approved task through the OAuth token
// endpoint (/oauth/token, RFC 8693 token exchange) rather than the REST
// mint: the caller's own ID token is the subject token, the task is named
// by an errand_task authorization detail (RFC 9396), resource is the
// audience (RFC 8707) and scopes narrow. Like Mint it carries an
// Idempotency-Key, is retried as Mint is, and is DPoP-bound when DPoPKey
// is set. A refusal is a *Problem with Errand's stable code (the RFC 6749
// error when the answer carries no code).
func (c *Client) Exchange(ctx context.Context, taskID, resource string, scopes []string) (TokenResponse, error) {
	subject := c.Token
	if c.Source != nil {
		var err error
		if subject, err = c.Source.Token(ctx); err != nil {
			return TokenResponse{}, err
		}
	}
	if subject == "" {
		return TokenResponse{}, errors.New("no identity token to exchange")
	}
	details, err := json.Marshal([]api.TaskDetail{{Type: "errand_task", TaskID: taskID}})
	if err != nil {
		return TokenResponse{}, err
	}
	form := url.Values{
		"grant_type":            {GrantTokenExchange},
		"subject_token":         {subject},
		"subject_token_type":    {TokenTypeIDToken},
		"authorization_details": {string(details)},
	}
	if resource != "" {
		form.Set("resource", resource)
	}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	key, err := idempotencyKey()
	if err != nil {
		return TokenResponse{}, err
	}
	var out TokenResponse
	_, err = c.do(ctx, call{method: http.MethodPost, path: "/oauth/token", in: form, out: &out, idempotent: true,
		header: http.Header{"Idempotency-Key": {key}}, dpop: c.DPoPKey != nil})
	return out, err
}
