// Package signin signs people in to Errand's web pages: Errand is an
// OpenID Connect relying party of each user issuer that carries a
// client_id, and keeps a server-side session per signed-in person.
//
// The flow is the authorization code flow with PKCE (RFC 7636, S256 only),
// a state bound to the browser by a short-lived cookie and kept server side
// with the issuer it was started for, and a nonce checked in the ID token
// (OpenID Connect Core §3.1.2.1, §3.1.3.7; RFC 9700 §2.1, §4.4, §4.5).
// The ID token is verified by the same verifier as bearer tokens
// (identity.Verifier: issuer pinning, audience, algorithms, lifetime,
// groups), and must come from the issuer the flow was started for; an
// RFC 9207 `iss` response parameter, when sent (or promised by the
// provider's metadata), must name it too.
//
// A session is a random 256-bit id in a cookie (`__Host-errand_session`
// with Secure over https; `errand_session` over plain http, where browsers
// refuse the prefix), HttpOnly and SameSite=Lax. Only the id's SHA-256
// digest is stored (Store, on PostgreSQL or SQLite), so every replica
// shares sessions and a copy of the table opens none. A session ends at
// its idle timeout, at its absolute timeout, at sign-out, or when its
// user's sessions are revoked (Manager.RevokeUser); a new id is issued at
// every sign-in (no fixation). Its CSRF token is derived from its id, so a
// form posted by another site, which cannot read the cookie, cannot carry
// it.
package signin
