package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/strictjson"
)

// The OAuth front door: the token endpoint (RFC 6749 §3.2) with the
// RFC 8693 token exchange and the OpenID CIBA grant, the backchannel
// authentication endpoint (ciba.go), and client authentication by the
// caller's workload ID token, in the Authorization header or as an
// RFC 7523 client assertion. Every path ends in the broker.Service calls
// the REST API makes.

// Grant, token and assertion types (RFC 8693 §3, CIBA §10.1, RFC 7523 §2.2).
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	grantCIBA          = "urn:openid:params:grant-type:ciba"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
	// tokenTypeIDJAG is an Identity Assertion JWT Authorization Grant
	// (draft-ietf-oauth-identity-assertion-authz-grant).
	tokenTypeIDJAG     = "urn:ietf:params:oauth:token-type:id-jag"
	assertionJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// typIDJAG is the typ of an Identity Assertion JWT Authorization Grant:
	// an authorization grant, never a client's identity.
	typIDJAG = "oauth-id-jag+jwt"
	// authDetailsType is Errand's RFC 9396 authorization details type.
	authDetailsType = "errand_task"
)

// repeatable are the parameters that may be given more than once
// (RFC 8707 §2, RFC 8693 §2.1); RFC 6749 §3.2 forbids repeating any other.
var repeatable = map[string]bool{"resource": true, "audience": true}

// oauthForm reads an application/x-www-form-urlencoded body of at most
// MaxBodyBytes. Parameters of the query string are not read.
func oauthForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, broker.Errorf(broker.ErrInvalidRequest, "Content-Type must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		if strings.Contains(err.Error(), "too large") {
			return nil, broker.Errorf(broker.ErrBodyTooLarge, "body larger than %d bytes", MaxBodyBytes)
		}
		return nil, broker.Errorf(broker.ErrInvalidRequest, "malformed form body")
	}
	for k, vs := range r.PostForm {
		if len(vs) > 1 && !repeatable[k] {
			return nil, broker.Errorf(broker.ErrInvalidRequest, "a parameter is given more than once")
		}
	}
	return r.PostForm, nil
}

// isForm reports whether r's body is a form.
func isForm(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/x-www-form-urlencoded"
}

// clientAuth authenticates the caller of an OAuth endpoint with its
// workload ID token (or JWT-SVID), verified exactly as a bearer identity
// (issuers, audience, lifetime; Errand's own tokens refused): either in
// the Authorization header, or as an RFC 7523 §2.2 client assertion
// (client_assertion_type jwt-bearer). Using both is invalid_request
// (RFC 6749 §2.3). An assertion whose issuer sets a jti is accepted once
// within its lifetime, on every replica (RFC 7523 §3, the replay cache);
// an ID-JAG is an authorization grant and never a client's identity. A
// client_id, when sent, must name the same principal.
func (s *Server) clientAuth(r *http.Request, form url.Values) (broker.Principal, error) {
	header := r.Header.Get("Authorization") != ""
	assertion, aType := form.Get("client_assertion"), form.Get("client_assertion_type")
	var (
		p   broker.Principal
		err error
	)
	switch {
	case header && (assertion != "" || aType != ""):
		return broker.Principal{}, broker.Errorf(broker.ErrInvalidRequest, "use one client authentication method")
	case header:
		p, err = s.authenticate(r)
		if err != nil {
			return broker.Principal{}, err
		}
	case aType == "" && assertion == "":
		return broker.Principal{}, s.chargeFailedAuth(r, broker.Errorf(broker.ErrInvalidToken, "client authentication is required"))
	case aType != assertionJWTBearer || assertion == "":
		return broker.Principal{}, s.chargeFailedAuth(r, broker.Errorf(broker.ErrInvalidToken, "client_assertion_type must be jwt-bearer with a client_assertion"))
	default:
		if p, err = s.verifyAssertion(r, assertion); err != nil {
			return broker.Principal{}, err
		}
	}
	if id := form.Get("client_id"); id != "" && id != p.Subject && id != p.Ref().String() {
		return broker.Principal{}, broker.Errorf(broker.ErrInvalidToken, "client_id does not name the authenticated client")
	}
	return p, nil
}

// verifyAssertion verifies an RFC 7523 client assertion and records its
// jti; on success the principal is throttled as a bearer one is.
func (s *Server) verifyAssertion(r *http.Request, raw string) (broker.Principal, error) {
	if strings.EqualFold(jwtTyp(raw), typIDJAG) {
		return broker.Principal{}, s.chargeFailedAuth(r, broker.Errorf(broker.ErrTokenNotAccepted, "an ID-JAG is not a client's identity"))
	}
	p, err := s.auth.Verify(r.Context(), raw)
	if err != nil {
		return broker.Principal{}, s.chargeFailedAuth(r, err)
	}
	// The signature is verified: the claims read here are the issuer's.
	var c struct {
		Iss string  `json:"iss"`
		JTI string  `json:"jti"`
		Exp float64 `json:"exp"` // a NumericDate may have a fraction (RFC 7519 §2)
	}
	if err := jwtClaims(raw, &c); err != nil {
		return broker.Principal{}, s.chargeFailedAuth(r, broker.Errorf(broker.ErrInvalidToken, "malformed claims"))
	}
	if c.JTI != "" {
		if err := s.svc.FirstUse(r.Context(), broker.ReplayClientAssertion, c.Iss, c.JTI, time.Unix(int64(c.Exp)+1, 0)); err != nil {
			return broker.Principal{}, s.chargeFailedAuth(r, err)
		}
	}
	infoOf(r.Context()).set(func(ri *reqInfo) { ri.principal = string(p.Kind) + ":" + p.Ref().String() })
	return p, s.throttle(string(p.Kind)+"\x00"+p.Issuer+"\x00"+p.Subject, s.byPrincipal)
}

// jwtTyp is the typ header of a compact JWS, "" when unreadable.
func jwtTyp(raw string) string {
	var h struct {
		Typ string `json:"typ"`
	}
	head, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil || json.Unmarshal(b, &h) != nil {
		return ""
	}
	return h.Typ
}

// jwtClaims decodes the payload of a compact JWS whose signature has been
// verified.
func jwtClaims(raw string, v any) error {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return broker.Errorf(broker.ErrInvalidToken, "not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// beginOAuth reads an OAuth endpoint's form and authenticates its client;
// on failure it has answered (RFC 6749 §5.2) and ok is false.
func (s *Server) beginOAuth(w http.ResponseWriter, r *http.Request) (form url.Values, p broker.Principal, ok bool) {
	form, err := oauthForm(w, r)
	if err == nil {
		p, err = s.clientAuth(r, form)
	}
	if err != nil {
		s.oauthRefuse(w, r, broker.Principal{}, "", err)
		return nil, broker.Principal{}, false
	}
	return form, p, true
}

// token is the token endpoint (RFC 6749 §3.2): the client authenticates,
// then the grant decides.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	form, p, ok := s.beginOAuth(w, r)
	if !ok {
		return
	}
	// A DPoP proof binds the token to its key, whichever grant issues it
	// (RFC 9449 §5); a bad one is invalid_dpop_proof.
	s.offerNonce(w)
	jkt, _, err := s.dpopKey(r)
	if err != nil {
		s.oauthRefuse(w, r, p, "", err)
		return
	}
	switch form.Get("grant_type") {
	case grantTokenExchange:
		s.tokenExchange(w, r, p, form, jkt)
	case grantCIBA:
		s.cibaGrant(w, r, p, form, jkt)
	case "":
		s.oauthRefuse(w, r, p, "", broker.Errorf(broker.ErrInvalidRequest, "grant_type is required"))
	default:
		s.oauthRefuse(w, r, p, "", broker.Errorf(broker.ErrUnsupportedGrantType, "unsupported grant_type"))
	}
}

// tokenResponse is RFC 6749 §5.1's answer, with RFC 8693 §2.2.1's
// issued_token_type and RFC 9396 §7's authorization_details naming the
// task, so that a client learns the task id it exchanges for further
// tokens.
type tokenResponse = api.TokenResponse

type taskDetailResponse = api.TaskDetail

func (s *Server) writeToken(w http.ResponseWriter, m broker.Minted) {
	if !m.Replayed {
		s.metrics.issued.Inc()
	}
	noStore(w)
	encodeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: m.Token, IssuedTokenType: tokenTypeAccess, TokenType: tokenType(m.Credential), ExpiresIn: m.ExpiresIn,
		Scope:                strings.Join(m.Credential.Scopes.Strings(), " "),
		AuthorizationDetails: []taskDetailResponse{{Type: authDetailsType, TaskID: m.Credential.TaskID}},
	})
}

// tokenExchange is RFC 8693 §2: the subject_token is the authenticated
// agent's own workload ID token (an Errand token or any other identity is
// invalid_request, §2.2.2); the task is named only by the errand_task
// authorization details, never by scope or resource (X03); scope narrows;
// resource and audience aim; only an access token is issued, bound to the
// DPoP key jkt when the request proved one.
func (s *Server) tokenExchange(w http.ResponseWriter, r *http.Request, p broker.Principal, form url.Values, jkt string) {
	refuse := func(err error) { s.oauthRefuse(w, r, p, "", err) }
	subject, subjectType := form.Get("subject_token"), form.Get("subject_token_type")
	if subject == "" || subjectType == "" {
		refuse(broker.Errorf(broker.ErrInvalidRequest, "subject_token and subject_token_type are required"))
		return
	}
	sp, err := s.auth.Verify(r.Context(), subject)
	if err != nil {
		refuse(subjectTokenError(err))
		return
	}
	if subjectType != tokenTypeIDToken && subjectType != tokenTypeJWT {
		refuse(broker.Errorf(broker.ErrUnsupportedTokenType, "subject_token_type must be id_token or jwt"))
		return
	}
	if sp.Kind != p.Kind || sp.Ref() != p.Ref() {
		refuse(broker.Errorf(broker.ErrInvalidRequest, "the subject_token does not identify the authenticated client"))
		return
	}
	if actor := form.Get("actor_token"); actor != "" || form.Get("actor_token_type") != "" {
		if _, err := s.auth.Verify(r.Context(), actor); err != nil {
			refuse(subjectTokenError(err))
			return
		}
		refuse(broker.Errorf(broker.ErrInvalidRequest, "actor_token is not accepted: the subject is the actor"))
		return
	}
	switch form.Get("requested_token_type") {
	case "", tokenTypeAccess:
	case tokenTypeIDJAG:
		s.idjagExchange(w, r, p, form, jkt)
		return
	default:
		refuse(broker.Errorf(broker.ErrUnsupportedTokenType, "only access tokens and ID-JAGs are issued"))
		return
	}
	d, err := taskDetails(form.Get("authorization_details"), true)
	if err != nil {
		refuse(err)
		return
	}
	scopes, err := formScopes(form, false)
	if err != nil {
		refuse(err)
		return
	}
	m, err := s.svc.Exchange(r.Context(), p, broker.ExchangeRequest{
		TaskID: d.TaskID, Scopes: scopes, Targets: append(form["resource"], form["audience"]...),
		IdempotencyKey: r.Header.Get("Idempotency-Key"), JKT: jkt,
	})
	if err != nil {
		s.oauthFail(w, r, p, err)
		return
	}
	s.writeToken(w, m)
}

// idjagExchange is the token exchange for an ID-JAG
// (draft-ietf-oauth-identity-assertion-authz-grant), for the already
// authenticated agent whose subject token was checked: audience is the
// target authorization server's issuer (one, configured: invalid_target
// otherwise), resource one of its resources, scope the Errand scopes
// within the task's approval (absent: all of them). The grant is bound to
// no key, so a DPoP proof is refused rather than ignored. The answer is
// the draft's, with the task named as on every token answer.
func (s *Server) idjagExchange(w http.ResponseWriter, r *http.Request, p broker.Principal, form url.Values, jkt string) {
	d, err := taskDetails(form.Get("authorization_details"), true)
	if err != nil {
		s.oauthRefuse(w, r, p, "", err)
		return
	}
	refuse := func(err error) { s.oauthRefuse(w, r, p, d.TaskID, err) }
	switch {
	case jkt != "":
		refuse(broker.Errorf(broker.ErrInvalidRequest, "an ID-JAG is bound to no key: send no DPoP proof"))
		return
	case len(form["audience"]) != 1:
		refuse(broker.Errorf(broker.ErrInvalidTarget, "audience must name one ID-JAG target's issuer"))
		return
	case len(form["resource"]) > 1:
		refuse(broker.Errorf(broker.ErrInvalidTarget, "an ID-JAG names one resource"))
		return
	}
	scopes, err := formScopes(form, false)
	if err != nil {
		refuse(err)
		return
	}
	m, err := s.svc.IDJAG(r.Context(), p, broker.IDJAGRequest{
		TaskID: d.TaskID, Audience: form.Get("audience"), Resource: form.Get("resource"), Scopes: scopes,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
	})
	if err != nil {
		s.oauthFail(w, r, p, err)
		return
	}
	if !m.Replayed {
		s.metrics.issued.Inc()
	}
	noStore(w)
	encodeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: m.Token, IssuedTokenType: tokenTypeIDJAG, TokenType: "N_A", ExpiresIn: m.ExpiresIn, Scope: m.Scope,
		AuthorizationDetails: []taskDetailResponse{{Type: authDetailsType, TaskID: m.Credential.TaskID}},
	})
}

// subjectTokenError makes a subject or actor token that fails
// verification RFC 8693 §2.2.2's invalid_request, keeping its code.
func subjectTokenError(err error) error {
	switch broker.CodeOf(err) {
	case broker.ErrInvalidToken.Code, broker.ErrTokenNotAccepted.Code:
		return &oauthError{error: "invalid_request", err: err}
	}
	return err
}

// formScopes reads scope (RFC 6749 §3.3, space-delimited): nil when
// absent and not required.
func formScopes(form url.Values, required bool) ([]string, error) {
	raw, ok := form["scope"]
	if !ok {
		if required {
			return nil, broker.Errorf(broker.ErrInvalidRequest, "scope is required")
		}
		return nil, nil
	}
	scopes := strings.Fields(raw[0])
	if len(scopes) == 0 {
		return nil, broker.Errorf(broker.ErrInvalidScope, "scope is empty")
	}
	return scopes, nil
}

// taskDetail is one RFC 9396 authorization details object of type
// errand_task: task_id names a task on a token exchange; goal, tool and
// dataset describe a new one on a backchannel request.
type taskDetail struct {
	Type    string `json:"type"`
	TaskID  string `json:"task_id"`
	Goal    string `json:"goal"`
	Tool    string `json:"tool"`
	Dataset string `json:"dataset"`
}

// taskDetails reads authorization_details: a JSON array of at most one
// object, of type errand_task, with no member Errand does not know. For an
// exchange it must name a task (task_id) and nothing else; for a
// backchannel request it may describe one and never name one. Anything
// else is RFC 9396 §5's invalid_authorization_details.
func taskDetails(raw string, exchange bool) (taskDetail, error) {
	bad := func(msg string) (taskDetail, error) {
		return taskDetail{}, &oauthError{error: "invalid_authorization_details", err: broker.Errorf(broker.ErrInvalidRequest, "%s", msg)}
	}
	if raw == "" {
		if exchange {
			return bad("authorization_details naming the task (type errand_task, task_id) is required")
		}
		return taskDetail{}, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(raw), &list); err != nil || len(list) > 1 {
		return bad("authorization_details must be a JSON array of one errand_task object")
	}
	if len(list) == 0 {
		return bad("authorization_details must be a JSON array of one errand_task object")
	}
	var d taskDetail
	if err := strictjson.Decode(list[0], &d); err != nil || d.Type != authDetailsType {
		return bad("authorization_details must be a JSON array of one errand_task object")
	}
	switch {
	case exchange && (d.TaskID == "" || d.Goal != "" || d.Tool != "" || d.Dataset != ""):
		return bad("on a token exchange, errand_task names a task by task_id alone")
	case !exchange && d.TaskID != "":
		return bad("a backchannel request describes a new task; it never names one")
	}
	return d, nil
}

// beginClient is begin for the RFC 7662 and RFC 7009 endpoints, which
// stock OAuth clients call with a form body: the caller authenticates with
// the Authorization header, or with an RFC 7523 client assertion in the
// form (clientAuth). Their refusals are RFC 6749 §5.2 JSON, as stock
// clients read them (RFC 7662 §2.3, RFC 7009 §2.2.1), with a 401's
// challenge naming invalid_client. On failure it has answered (and
// audited) the refusal and returns nil.
func (s *Server) beginClient(w http.ResponseWriter, r *http.Request) *call {
	c := &call{s: s, w: w, r: r, oauth: true}
	if !isForm(r) {
		c.refuse(&statusError{status: http.StatusUnsupportedMediaType,
			err: broker.Errorf(broker.ErrInvalidRequest, "Content-Type must be application/x-www-form-urlencoded")})
		return nil
	}
	if r.Header.Get("Authorization") != "" {
		p, err := s.authenticate(r)
		if err != nil {
			c.refuse(err)
			return nil
		}
		c.p = p
		// The form is read as strictly as without the header: a malformed
		// body or a repeated parameter (token=A&token=B, of which only A
		// would be revoked) is refused, never half-honoured.
		form, err := oauthForm(w, r)
		if err != nil {
			c.refuse(err)
			return nil
		}
		if form.Has("client_assertion") || form.Has("client_assertion_type") {
			c.refuse(broker.Errorf(broker.ErrInvalidRequest, "use one client authentication method"))
			return nil
		}
		return c
	}
	form, err := oauthForm(w, r)
	if err != nil {
		c.refuse(err)
		return nil
	}
	if c.p, err = s.clientAuth(r, form); err != nil {
		c.p = broker.Principal{}
		c.refuse(err)
		return nil
	}
	return c
}
