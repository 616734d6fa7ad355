// Package identity verifies the OIDC ID tokens (and SPIFFE JWT-SVIDs) that
// agents, users and resource servers present, and maps them to
// broker.Principal values.
//
// One go-oidc verifier is built per configured issuer, chosen by exact
// match of the token's `iss`, with the audience required and the signing
// algorithms pinned. go-oidc refetches a JWKS on every unknown `kid`; this
// package serves keys from its own cache instead and refetches at most once
// per cool-down period per issuer, so a flood of random `kid`s cannot
// hammer an identity provider. Errand's own access tokens are never
// accepted as identity (token_not_accepted).
//
// An issuer with SPIFFE settings is a SPIFFE trust domain: a token whose
// sub is a SPIFFE ID of it (no iss needed) is a JWT-SVID, verified with
// go-spiffe's jwtsvid.ParseAndValidate against the trust domain's bundle
// (Workload API, bundle endpoint, OIDC discovery JWKS or file), never
// served from the verification cache so that a key removed from the
// bundle stops verifying at once.
package identity
