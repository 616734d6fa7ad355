// Package resource lets a Go resource server accept Errand's access tokens
// offline: an http.Handler middleware (Verifier.Require, Verifier.Middleware)
// and a plain Verifier.Verify.
//
// A token is accepted only when every check passes:
//
//   - its JOSE header names typ at+jwt (RFC 9068 §2.1), no crit, and an
//     algorithm Errand signs with (EdDSA, ES256) that is also the algorithm
//     of the JWKS key named by its kid: HS256 keyed with a public key and
//     alg none are refused before any key is touched (RFC 8725 §3.1);
//   - its signature verifies under a key of Errand's JWKS
//     (/.well-known/jwks.json), fetched on first use, refreshed every
//     KeysRefresh for rotation, and refetched on an unknown kid at most
//     once per RefetchCooldown, however many requests name unknown kids;
//   - iss is Errand's URL, aud is this resource server's audience, exp has
//     not passed (Leeway, default 5 s, at most MaxLeeway), nbf and iat are
//     not in the future, and jti, task_id, sub are present;
//   - it is not revoked: the Verifier follows Errand's revocation feed
//     (Run) and refuses any token whose jti the feed names;
//   - a token bound to a key (cnf.jkt, RFC 9449 §6) comes with the DPoP
//     scheme and a DPoP proof of that key for this request (package dpop);
//   - for Require, one of its scopes covers the route's scope, decided by
//     Errand's own containment (broker.Scope.CoveredBy): acme/** never
//     covers acme-evil/api, and resources compare case-sensitively.
//
// A token whose signature and claims were checked is remembered by its
// SHA-256 (at most 10,000): used again it costs a hash, while its expiry,
// its key still being published, its revocation, its DPoP proof and its
// scope are checked at every use.
//
// # The revocation feed and its bound
//
// Run keeps a Verifier current: it catches up with GET /v1/revocations,
// then holds GET /v1/revocations/stream (Server-Sent Events, resumed with
// Last-Event-ID), and polls every PollInterval while the stream is
// unavailable. It authenticates with the resource server's own workload
// ID token (Config.Credential), from an issuer Errand trusts as kind
// resource; the audience must name this resource server in its
// introspectors (or opt in with any_introspector), or the feed shows it
// nothing.
//
// The Verifier counts itself current until a bound:
//
//   - while the stream is open, until StreamIdle (default 40 s) after the
//     last byte it received (Errand sends a keep-alive every 15 s), which
//     bounds a silently dead connection;
//   - once the stream is seen closed or a poll fails, until MaxStale
//     (default 5 s) after the last moment it was known current (the
//     disconnect, or the start of the last successful poll).
//
// Past the bound every token is refused with 503 and Retry-After (fail
// closed), or, with Config.Introspect, each token is asked of
// POST /v1/introspect and accepted only when Errand answers active. A
// token revoked while the feed is up is refused within a second (the
// stream is pushed on commit).
//
// # Errors
//
// Refusals are *Error values; the middleware writes them with RFC 6750
// §3 WWW-Authenticate challenges (invalid_request, invalid_token,
// insufficient_scope with the scope needed), in the DPoP scheme (RFC 9449
// §7.1) for a bound token, and with the RFC 9728 resource_metadata of
// Verifier.MetadataHandler.
package resource
