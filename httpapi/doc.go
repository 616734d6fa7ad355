// Package httpapi serves Errand's REST contract (openapi.yaml) with chi.
//
// Handlers are thin: authenticate, decode with a size limit, one Service
// call, render. Errors are translated to RFC 9457 problem+json in exactly
// one place (problem.go). The Service audits the refusals it returns
// (fail answers them); problem.go writes the request.refused audit event
// of every refusal the API makes itself (refuse: a malformed body, a bad
// token, a rate limit). Either way, if that event cannot be written the
// answer is 503, never a refusal that left no trace.
package httpapi
