// Package broker is Errand's domain core: tasks, approvals, the scope
// algebra, the action catalog and the nine invariants of docs/design.md.
//
// The package performs no I/O of its own and imports no HTTP, SQL, JOSE or
// OIDC library (a test enforces this). It declares the ports it needs —
// the storage port (Store, with Tx and Reader; every method required),
// KeyStore, TokenIssuer, SecretIssuer and Policy — and the adapters in
// store/, issuer/ and policy/ implement them; identity/ turns credentials
// into the Principals the flows take. Every refusal is a *Error carrying a stable
// code; httpapi is the only place that turns a code into an HTTP status.
// The Service audits every refusal it returns to an identified caller,
// once, as a request.refused event naming the operation refused
// (refusals.go).
package broker
