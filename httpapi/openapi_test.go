package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// specPath is the REST contract, relative to this package's directory.
const specPath = "../openapi.yaml"

// spec is openapi.yaml, loaded and validated once per test binary.
var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// loadSpec returns the validated contract and a router over it that
// matches any scheme and host: the servers are dropped before the router is
// built, so requests made with httptest.NewRequest (host example.com) and
// requests to an httptest.Server (host 127.0.0.1:port) route alike.
func loadSpec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	spec.once.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(specPath)
		if err != nil {
			spec.err = fmt.Errorf("load %s: %w", specPath, err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			spec.err = fmt.Errorf("%s is not a valid OpenAPI document: %w", specPath, err)
			return
		}
		// gorillamux turns every server URL into a scheme, host and base
		// path matcher; with none it matches on the path alone.
		doc.Servers = nil
		for _, item := range doc.Paths.Map() {
			item.Servers = nil
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			spec.err = fmt.Errorf("route %s: %w", specPath, err)
			return
		}
		spec.doc, spec.router = doc, r
	})
	if spec.err != nil {
		t.Fatalf("contract: %v", spec.err)
		return nil, nil
	}
	return spec.doc, spec.router
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	loadSpec(t)
}

// TestOpenAPIRoutesMatchSpec holds routes.go and openapi.yaml to each
// other: every chi route is a documented operation and every documented
// operation is routed.
func TestOpenAPIRoutesMatchSpec(t *testing.T) {
	doc, _ := loadSpec(t)

	// routes() only takes method values of s: no database or identity
	// provider is needed to build and walk it. (&Server{}).routes() works
	// too; the registry only keeps /metrics servable should anyone call it.
	s := &Server{registry: prometheus.NewRegistry()}
	routed := map[string]bool{}
	err := chi.Walk(s.routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routed[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatalf("chi.Walk: %v", err)
	}
	if len(routed) == 0 {
		t.Fatal("chi.Walk found no routes")
	}

	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}

	for _, op := range slices.Sorted(maps.Keys(routed)) {
		if !documented[op] {
			t.Errorf("routes.go serves %s, which openapi.yaml does not document", op)
		}
	}
	for _, op := range slices.Sorted(maps.Keys(documented)) {
		if !routed[op] {
			t.Errorf("openapi.yaml documents %s, which routes.go does not serve", op)
		}
	}
}

// TestOpenAPISecurity checks that every /v1 operation requires the bearer
// scheme and that nothing else does.
func TestOpenAPISecurity(t *testing.T) {
	doc, _ := loadSpec(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			sec := doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			bearer := false
			for _, req := range sec {
				if _, ok := req["bearer"]; ok {
					bearer = true
				}
			}
			if v1 := strings.HasPrefix(path, "/v1/"); v1 != bearer {
				t.Errorf("%s %s: bearer security is %v, want %v", method, path, bearer, v1)
			}
		}
	}
}

// terse keeps schema errors to the failing pointer and reason; the body is
// printed once beside them.
var terse = []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()}

// inputNotJudged are the statuses at which a request outside the contract
// is expected rather than a finding: 400, 413 and 415 answer malformed
// input that tests send on purpose, and 401 is answered before any handler
// reads the query or the body (authenticate comes first in every handler),
// so a test of authentication may send any body at all.
func inputNotJudged(status int) bool {
	return status == http.StatusBadRequest ||
		status == http.StatusUnauthorized ||
		status == http.StatusRequestEntityTooLarge ||
		status == http.StatusUnsupportedMediaType
}

// checkContract holds one exchange to openapi.yaml. Call it on every
// response a test receives; it reports mismatches with t.Errorf and never
// stops the test (only an unloadable spec is fatal).
//
//   - The request is routed with kin-openapi's gorillamux router, host and
//     scheme ignored. A request that matches no documented path must have
//     been answered 404, one whose method is not documented for its path
//     405, each with a problem+json body (a Problem whose status is the
//     response's); anything else is an error. A 431 is answered by net/http
//     before any handler runs and is only logged.
//   - When status < 500 the request (path, query, headers, and reqBody as
//     the body) is validated against the operation; authentication is not
//     checked. A body of only white space counts as no body, and a body sent
//     without Content-Type is read as application/json, as decode() does.
//     A request the contract rejects is an error, except when the server
//     answered 400, 413 or 415 (tests send malformed input on purpose) or
//     401 (answered before the body is read); then it is only logged.
//   - The response is always validated: its status must be documented for
//     the operation, its documented headers (Location, Retry-After,
//     WWW-Authenticate) present and well-formed, its Content-Type the
//     documented one and its body valid against the schema. The body of
//     GET /metrics is not validated, only its media type (text/plain); nor
//     is the (absent) body of a response to HEAD.
func checkContract(t testing.TB, req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) {
	t.Helper()
	_, router := loadSpec(t)
	if router == nil {
		return
	}
	if header == nil {
		header = http.Header{}
	}
	exchange := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), status)

	// A copy of the request, with a body that can be read again: the
	// handler has consumed the original.
	ctx := context.Background()
	rq := req.Clone(ctx)
	if len(bytes.TrimSpace(reqBody)) == 0 {
		rq.Body, rq.ContentLength, rq.GetBody = http.NoBody, 0, nil
	} else {
		body := bytes.Clone(reqBody)
		rq.ContentLength = int64(len(body))
		rq.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		rq.Body, _ = rq.GetBody()
	}

	if status == http.StatusRequestHeaderFieldsTooLarge {
		t.Logf("contract: %s: answered by net/http before any handler; not part of the contract", exchange)
		return
	}

	route, params, err := router.FindRoute(rq)
	if err != nil {
		switch {
		case errors.Is(err, routers.ErrPathNotFound) && status == http.StatusNotFound,
			errors.Is(err, routers.ErrMethodNotAllowed) && status == http.StatusMethodNotAllowed:
			checkBareProblem(t, exchange, req.Method == http.MethodHead, status, header, respBody)
		default:
			t.Errorf("contract: %s: no documented operation (%v), yet the server answered %d", exchange, err, status)
		}
		return
	}
	opName := route.Operation.OperationID + " (" + route.Method + " " + route.Path + ")"

	if rq.Body != http.NoBody && rq.Header.Get("Content-Type") == "" && route.Operation.RequestBody != nil &&
		route.Operation.RequestBody.Value.Content.Get("application/json") != nil {
		rq.Header = rq.Header.Clone()
		rq.Header.Set("Content-Type", "application/json")
	}

	reqInput := &openapi3filter.RequestValidationInput{
		Request:    rq,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc,
			MultiError:              true,
			SkipSettingDefaults:     true,
			SchemaValidationOptions: terse,
		},
	}
	if status < 500 {
		if err := openapi3filter.ValidateRequest(ctx, reqInput); err != nil {
			if inputNotJudged(status) {
				t.Logf("contract: %s: %s: request outside the contract, refused as expected: %v", opName, exchange, err)
			} else {
				t.Errorf("contract: %s: %s: the server answered %d to a request that the contract rejects: %v", opName, exchange, status, err)
			}
		}
	}

	metricsBody := route.Operation.OperationID == "metrics"
	respInput := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: reqInput,
		Status:                 status,
		Header:                 header,
		Options: &openapi3filter.Options{
			IncludeResponseStatus:   true,
			MultiError:              true,
			ExcludeResponseBody:     metricsBody,
			SchemaValidationOptions: terse,
		},
	}
	respInput.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, respInput); err != nil {
		t.Errorf("contract: %s: %s: response does not match the contract: %v\nbody: %s", opName, exchange, err, truncate(respBody))
	}
	if metricsBody && status == http.StatusOK {
		if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt != "text/plain" {
			t.Errorf("contract: %s: %s: Content-Type %q, want text/plain", opName, exchange, header.Get("Content-Type"))
		}
	}
}

// checkBareProblem checks the 404 and 405 that chi answers outside any
// documented operation: a Problem whose status is the response's.
func checkBareProblem(t testing.TB, exchange string, head bool, status int, header http.Header, body []byte) {
	t.Helper()
	doc, _ := loadSpec(t)
	if mt, _, _ := mime.ParseMediaType(header.Get("Content-Type")); mt != "application/problem+json" {
		t.Errorf("contract: %s: Content-Type %q, want application/problem+json", exchange, header.Get("Content-Type"))
		return
	}
	if head {
		return // a response to HEAD carries no body
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("contract: %s: problem body is not JSON: %v\nbody: %s", exchange, err, truncate(body))
		return
	}
	schema := doc.Components.Schemas["Problem"].Value
	if err := schema.VisitJSON(v, openapi3.DisableSchemaErrorDetails(), openapi3.MultiErrors()); err != nil {
		t.Errorf("contract: %s: body is not a Problem: %v\nbody: %s", exchange, err, truncate(body))
		return
	}
	if got, _ := v.(map[string]any)["status"].(float64); int(got) != status {
		t.Errorf("contract: %s: problem status %v, want %d", exchange, got, status)
	}
}

func truncate(b []byte) string {
	const max = 2048
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// recordingTB stands in for a *testing.T and records the failures
// reported to it instead of failing.
type recordingTB struct {
	testing.TB
	failures []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Error(args ...any) { r.failures = append(r.failures, fmt.Sprint(args...)) }

func (r *recordingTB) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

func (r *recordingTB) Fatal(args ...any) { r.Error(args...) }

func (r *recordingTB) Logf(string, ...any) {}

func (r *recordingTB) Log(...any) {}

// TestCheckContractRejectsWrongShape feeds checkContract fabricated
// exchanges, so that the helper can neither pass everything nor fail what
// conforms.
func TestCheckContractRejectsWrongShape(t *testing.T) {
	loadSpec(t)

	const (
		mintPath = "/v1/tasks/tsk_aaaaaaaaaaaaaaaaaaaaaaaaaa/tokens"
		mintReq  = `{"scopes":["github.repo.read:acme/**"],"audience":"https://api.github.com"}`
		task     = `{"id":"tsk_a","status":"pending","version":1,"digest":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","agent":"https://agents#bot","on_behalf_of":"alice",` +
			`"goal":"g","scopes":["github.repo.read:acme/**"],"approved_scopes":[],` +
			`"scope_details":[{"scope":"github.repo.read:acme/**","class":"read","risk":"low"}],"audiences":["https://api.github.com"],` +
			`"approved_audiences":[],"risk":"low","ttl_capped":false,"require_dpop":false,"created_at":"2026-01-02T03:04:05.123456Z",` +
			`"approved_at":null,"expires_at":"2026-01-02T04:04:05.123456Z","closed_at":null}`
	)
	mintResp := func(drop string) string {
		m := map[string]any{
			"access_token": "eyJ.eyJ.sig", "token_type": "Bearer",
			"issued_token_type": "urn:ietf:params:oauth:token-type:jwt", "expires_in": 300,
			"scope": "github.repo.read:acme/**", "jti": "j1", "task_id": "tsk_a", "audience": "https://api.github.com",
		}
		delete(m, drop)
		b, _ := json.Marshal(m)
		return string(b)
	}
	problem := func(status int, code string) string {
		return fmt.Sprintf(`{"type":"urn:errand:problem:%s","title":%q,"status":%d,"detail":"d","code":%q}`,
			code, http.StatusText(status), status, code)
	}
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	problemCT := http.Header{"Content-Type": {"application/problem+json"}}
	with := func(h http.Header, k, v string) http.Header {
		h = h.Clone()
		h.Set(k, v)
		return h
	}

	tests := []struct {
		name       string
		method     string
		path       string
		reqCT      string
		reqBody    string
		status     int
		header     http.Header
		respBody   string
		wantFailed bool
	}{
		{"conforming mint", "POST", mintPath, "application/json", mintReq, 201, jsonCT, mintResp(""), false},
		{"mint without access_token", "POST", mintPath, "application/json", mintReq, 201, jsonCT, mintResp("access_token"), true},
		{"mint with an extra field", "POST", mintPath, "application/json", mintReq, 201, jsonCT,
			strings.Replace(mintResp(""), "{", `{"refresh_token":"r",`, 1), true},
		{"mint answered as text", "POST", mintPath, "application/json", mintReq, 201,
			http.Header{"Content-Type": {"text/plain"}}, mintResp(""), true},
		{"undocumented status", "POST", mintPath, "application/json", mintReq, 200, jsonCT, mintResp(""), true},
		{"accepted body the contract rejects", "POST", mintPath, "application/json",
			`{"scopes":["github.repo.read"],"audience":"a","extra":1}`, 201, jsonCT, mintResp(""), true},
		{"refused body the contract rejects", "POST", mintPath, "application/json",
			`{"scopes":["github.repo.read"],"audience":"a","extra":1}`, 400, problemCT, problem(400, "invalid_request"), false},
		{"401 to a body the contract rejects", "POST", "/v1/tasks", "application/json", `{}`, 401,
			with(problemCT, "WWW-Authenticate", `Bearer error="invalid_token"`), problem(401, "invalid_token"), false},
		{"403 to a body the contract rejects", "POST", "/v1/tasks", "application/json", `{}`, 403, problemCT,
			problem(403, "wrong_principal_kind"), true},
		{"JSON body without Content-Type", "POST", mintPath, "", mintReq, 201, jsonCT, mintResp(""), false},
		{"problem with the code of another status", "POST", mintPath, "application/json", mintReq, 403, problemCT,
			problem(403, "invalid_token"), true},
		{"problem as application/json", "POST", mintPath, "application/json", mintReq, 403, jsonCT,
			problem(403, "not_task_party"), true},
		{"401 without WWW-Authenticate", "POST", mintPath, "application/json", mintReq, 401, problemCT,
			problem(401, "invalid_token"), true},
		{"401 with WWW-Authenticate", "POST", mintPath, "application/json", mintReq, 401,
			with(problemCT, "WWW-Authenticate", `Bearer error="invalid_token"`), problem(401, "invalid_token"), false},
		{"503 without Retry-After", "GET", "/readyz", "", "", 503, problemCT, problem(503, "unavailable"), true},
		{"503 with Retry-After", "GET", "/readyz", "", "", 503, with(problemCT, "Retry-After", "5"),
			problem(503, "unavailable"), false},
		{"task with approved_at missing", "GET", "/v1/tasks/tsk_a", "", "", 200, jsonCT,
			strings.Replace(task, `"approved_at":null,`, "", 1), true},
		{"conforming task", "GET", "/v1/tasks/tsk_a", "", "", 200, jsonCT, task, false},
		{"created task without Location", "POST", "/v1/tasks", "application/json",
			`{"on_behalf_of":"alice","goal":"g","scopes":["a.b"],"audiences":["https://api.github.com"]}`, 201, jsonCT, task, true},
		{"active and inactive at once", "POST", "/v1/introspect", "application/x-www-form-urlencoded", "token=x", 200, jsonCT,
			`{"active":false,"sub":"alice"}`, true},
		{"inactive token", "POST", "/v1/introspect", "application/x-www-form-urlencoded", "token=x", 200, jsonCT,
			`{"active":false}`, false},
		{"unknown path answered 404", "GET", "/v1/nope", "", "", 404, problemCT, problem(404, "not_found"), false},
		{"unknown path answered 200", "GET", "/v1/nope", "", "", 200, jsonCT, `{}`, true},
		{"wrong method answered 405", "DELETE", "/v1/tasks", "", "", 405, problemCT, problem(405, "invalid_request"), false},
		{"wrong method answered 405 as text", "DELETE", "/v1/tasks", "", "", 405, http.Header{"Content-Type": {"text/plain"}},
			"method not allowed", true},
		{"405 whose problem says 400", "DELETE", "/v1/tasks", "", "", 405, problemCT, problem(400, "invalid_request"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.reqBody))
			req.Header.Set("Authorization", "Bearer x")
			if tc.reqCT != "" {
				req.Header.Set("Content-Type", tc.reqCT)
			}
			rec := &recordingTB{TB: t}
			checkContract(rec, req, []byte(tc.reqBody), tc.status, tc.header, []byte(tc.respBody))
			for _, f := range rec.failures {
				t.Logf("reported: %s", f)
			}
			if failed := len(rec.failures) > 0; failed != tc.wantFailed {
				t.Errorf("checkContract reported %d violations %q, want violations: %v", len(rec.failures), rec.failures, tc.wantFailed)
			}
		})
	}
}
