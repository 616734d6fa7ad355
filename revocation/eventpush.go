package revocation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/errandhq/errand/broker"
)

// SessionRevoked is the CAEP event type EventPush announces: the session
// the grant opened at the target (the grant and every token the target
// issued from it) is revoked.
const SessionRevoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"

// SETSigner signs Security Event Tokens with the keys Errand's JWKS
// publishes (issuer/jwt).
type SETSigner interface {
	SignSET(ctx context.Context, set broker.SecurityEvent) (string, error)
}

// CredentialReader finds a credential by its jti.
type CredentialReader interface {
	Credential(ctx context.Context, jti string) (broker.Credential, error)
}

// EventPush is the outbox backend of ID-JAGs: it tells the target
// authorization server that a revoked ID-JAG is revoked, with a Security
// Event Token (RFC 8417) pushed to the target's endpoint (RFC 8935). The
// SET carries the CAEP session-revoked event; its sub_id (RFC 9493,
// format "opaque") is the ID-JAG's jti, the id the target saw in the
// grant it redeemed. Errand keeps no ID-JAG, so nothing secret is sent:
// the SET is signed by Errand's keys and names a grant the target knows.
//
// A SET's jti is derived from the grant's, so a retry is the same event
// and the receiver may drop it as a duplicate (RFC 8935 §2.2). Only a 202
// (or another 2xx) confirms; anything else is retried by the outbox and
// raises backend.revoke_failed after its alarm time.
type EventPush struct {
	Credentials CredentialReader
	Signer      SETSigner
	// Endpoints are the push endpoints by target issuer.
	Endpoints map[string]string
	// Client sends the SETs; by default one that follows no redirect and
	// gives up after 10 s.
	Client *http.Client
	Now    func() time.Time
}

// NewEventPush returns the backend for targets' push endpoints, or nil
// when no target has one.
func NewEventPush(creds CredentialReader, signer SETSigner, targets []broker.IDJAGTarget) *EventPush {
	eps := map[string]string{}
	for _, t := range targets {
		if t.EventsEndpoint != "" {
			eps[t.Issuer] = t.EventsEndpoint
		}
	}
	if len(eps) == 0 {
		return nil
	}
	return &EventPush{Credentials: creds, Signer: signer, Endpoints: eps}
}

// Revoke pushes the session-revoked event for the ID-JAG item.Ref.
func (p *EventPush) Revoke(ctx context.Context, item broker.OutboxItem) error {
	c, err := p.Credentials.Credential(ctx, item.Ref)
	if err != nil {
		return fmt.Errorf("id-jag %s: %w", broker.HashID(item.Ref), err)
	}
	endpoint, ok := p.Endpoints[c.Audience]
	if !ok {
		// The target no longer takes events (configuration changed):
		// nothing can be told, and nothing waits.
		return nil
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	at := c.RevokedAt
	if at.IsZero() {
		at = now()
	}
	set, err := p.Signer.SignSET(ctx, broker.SecurityEvent{
		Audience: c.Audience, JTI: "rev-" + broker.HashID(c.ID)[:32], IssuedAt: now(), Txn: c.TaskID,
		SubID: map[string]any{"format": "opaque", "id": c.ID},
		Events: map[string]any{SessionRevoked: map[string]any{
			"event_timestamp":   at.Unix(),
			"initiating_entity": "policy",
			"reason_admin":      map[string]string{"en": "the grant was revoked: its Errand task ended, or its holder revoked it"},
		}},
	})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader([]byte(set)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	client := p.Client
	if client == nil {
		client = defaultPushClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("push to %s: %w", c.Audience, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	// RFC 8935 §2.3: an error is {"err": code, "description": …}.
	var e struct {
		Err string `json:"err"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Err != "" {
		return fmt.Errorf("push to %s: %d %s", c.Audience, resp.StatusCode, e.Err)
	}
	return fmt.Errorf("push to %s: %d", c.Audience, resp.StatusCode)
}

var defaultPushClient = &http.Client{
	Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return errors.New("a push endpoint does not redirect")
	},
}
