package httpapi

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/errandhq/errand/broker"
)

// backchannelAuthorize is OpenID CIBA Core §7's backchannel authentication
// endpoint, poll mode: the authenticated agent asks its user (login_hint,
// on_behalf_of) for a task (scope, resource as audiences, requested_expiry
// as its TTL, errand_task authorization details with goal, tool and
// dataset, binding_message). The task is created by the broker exactly as
// POST /v1/tasks creates one; the answer is §7.3's {auth_req_id,
// expires_in, interval}.
func (s *Server) backchannelAuthorize(w http.ResponseWriter, r *http.Request) {
	form, p, ok := s.beginOAuth(w, r)
	if !ok {
		return
	}
	refuse := func(err error) { s.oauthRefuse(w, r, p, "", err) }
	if form.Get("login_hint_token") != "" || form.Get("id_token_hint") != "" {
		refuse(broker.Errorf(broker.ErrInvalidRequest, "the user is named by login_hint only"))
		return
	}
	if form.Get("login_hint") == "" {
		refuse(broker.Errorf(broker.ErrInvalidRequest, "login_hint is required"))
		return
	}
	scopes, err := formScopes(form, true)
	if err != nil {
		refuse(err)
		return
	}
	ttl, err := requestedExpiry(form)
	if err != nil {
		refuse(err)
		return
	}
	d, err := taskDetails(form.Get("authorization_details"), false)
	if err != nil {
		refuse(err)
		return
	}
	started, err := s.svc.StartBackchannel(r.Context(), p, broker.BackchannelStart{
		Task: broker.CreateTaskRequest{
			OnBehalfOf: form.Get("login_hint"), Goal: d.Goal, Scopes: scopes, Audiences: form["resource"],
			TTLSeconds: ttl, Tool: d.Tool, Dataset: d.Dataset,
		},
		BindingMessage: form.Get("binding_message"),
	})
	if err != nil {
		s.oauthFail(w, r, p, err)
		return
	}
	infoOf(r.Context()).set(func(ri *reqInfo) { ri.task = started.Task.ID })
	noStore(w)
	encodeJSON(w, http.StatusOK, backchannelResponse{
		AuthReqID: started.AuthReqID, ExpiresIn: started.ExpiresIn, Interval: started.Interval,
	})
}

// backchannelResponse is CIBA §7.3's successful answer.
type backchannelResponse struct {
	AuthReqID string `json:"auth_req_id"`
	ExpiresIn int64  `json:"expires_in"`
	Interval  int64  `json:"interval"`
}

// requestedExpiry reads CIBA's requested_expiry, a positive integer of
// seconds (0 when absent: the default task TTL).
func requestedExpiry(form url.Values) (int64, error) {
	v := form.Get("requested_expiry")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, broker.Errorf(broker.ErrInvalidRequest, "requested_expiry must be a positive integer of seconds")
	}
	return n, nil
}

// cibaGrant is the token request of CIBA §10.1 in poll mode: the agent
// that asked polls with its auth_req_id (§11's errors until the user
// decides).
func (s *Server) cibaGrant(w http.ResponseWriter, r *http.Request, p broker.Principal, form url.Values, jkt string) {
	id := form.Get("auth_req_id")
	if id == "" {
		s.oauthRefuse(w, r, p, "", broker.Errorf(broker.ErrInvalidRequest, "auth_req_id is required"))
		return
	}
	m, err := s.svc.PollBackchannel(r.Context(), p, id, jkt)
	if err != nil {
		s.oauthFail(w, r, p, err)
		return
	}
	s.writeToken(w, m)
}
