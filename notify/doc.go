// Package notify delivers Errand's notifications to webhooks: a task
// created (waiting for its user), a step-up approval asked for, a task
// approved, denied or closed, a backend revocation still unconfirmed.
//
// The broker queues one delivery per (event, webhook) in the transaction
// of the change it reports (broker.NoticeTx), so a crash loses none. The
// Worker here drains that outbox: one loop per webhook, so that a slow or
// dead receiver holds up only its own deliveries, never another's and
// never a request (nothing on the request path waits for a webhook). A
// delivery is leased while it is attempted; a replica killed mid-delivery
// leaves it to be claimed again when the lease ends, with the same
// webhook-id. Failures are retried with capped exponential backoff and
// full jitter until GiveUpAfter, when the delivery is given up and
// audited (notification.failed). Delivery is at least once: a receiver
// de-duplicates by webhook-id.
//
// Every request is signed per the Standard Webhooks specification
// (webhook-id, webhook-timestamp, webhook-signature: "v1," + base64 of
// HMAC-SHA256 over "id.timestamp.body"), with the standard-webhooks
// library. The body is the standard JSON payload (Payload) or a
// Slack-compatible message (SlackMessage); neither carries a credential,
// and the agent's words (goal, tool, dataset) are fields of their own,
// never part of Errand's summary, and escaped for Slack.
//
// Server-side request forgery is refused twice: at config load (CheckURL:
// https only, or http to a loopback address; no link-local, metadata,
// unspecified or multicast address; private ranges only when allowed) and
// at every connection, on the address actually dialed (a net.Dialer
// Control function), so a name that resolves somewhere else later (DNS
// rebinding) is refused too. Redirects are never followed and no proxy is
// used.
package notify
