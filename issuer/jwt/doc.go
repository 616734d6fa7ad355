// Package jwt mints Errand's access tokens (RFC 9068 profile) with
// golang-jwt, keeps the signing keys sealed in the store so that every
// replica signs with the same keys, serves them as a JWKS, and verifies
// Errand's own tokens for introspection.
//
// Verification is strict where golang-jwt is lenient (RFC 8725): the
// algorithm is pinned to the key's, `typ` must be `at+jwt`, any `crit`
// header is refused, `exp` and `iat` are required, and keys are looked up
// by `kid` in memory only.
package jwt
