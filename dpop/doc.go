// Package dpop verifies DPoP proofs (RFC 9449, OAuth 2.0 Demonstrating
// Proof of Possession): the JWTs a client signs with its own key, sent in
// the DPoP header, that bind an access token to that key.
//
// A Verifier checks a proof as RFC 9449 §4.3 lists: one compact JWS of
// typ dpop+jwt, signed with an asymmetric algorithm of an allow-list by
// the public key in its jwk header; htm and htu naming this request
// (htu compared after RFC 3986 §6 normalisation, without query and
// fragment); iat within a window of the injected clock; a jti not seen
// before, remembered in a ReplayCache shared by every replica; and, when
// the proof accompanies an access token, ath the token's hash (§4.3
// step 11, §7.1). The proof's key is known by its RFC 7638 thumbprint,
// the jkt that an authorization server puts in a bound token's cnf
// claim (§6.1) and a resource server compares (VerifyBound).
//
// Server-provided nonces (§8) are optional (Config.Nonces): stateless,
// a MAC of the current period under a key the replicas share, so that no
// replica keeps or exchanges them. Without them a proof's nonce claim is
// ignored, and freshness rests on the iat window and the jti cache. The
// resource server's nonce (§9) is left to resource servers.
package dpop
