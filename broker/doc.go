// Package broker is Errand's domain core: tasks, approvals, the scope
// algebra, the action catalog and the nine invariants of DESIGN.md.
//
// The package performs no I/O of its own and imports no HTTP, SQL, JOSE or
// OIDC library (a test enforces this). It declares the small interfaces it
// needs — Store, Tx, Signer — and the adapters in store/, issuer/ and
// identity/ implement them. Every refusal is a *Error carrying a stable
// code; httpapi is the only place that turns a code into an HTTP status.
// The Service audits every refusal it returns to an identified caller,
// once, as a request.refused event naming the operation refused
// (refusals.go).
package broker
