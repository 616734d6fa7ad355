package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/errandhq/errand/broker"
)

// TestOAuthExchangeStepUpBudgetIdempotency: the exchange is a mint: a
// @step_up policy answers authorization_pending with code
// approval_required and the approval to wait for (one approval.requested
// event), and once approved the same exchange succeeds; an Idempotency-Key
// retry is the same credential; a spent budget is access_denied.
func TestOAuthExchangeStepUpBudgetIdempotency(t *testing.T) {
	e := policyEnv(t, envOptions{budget: broker.Budget{MaxCredentials: 2}})
	id := e.approved("agent-1", "alice", "github.pr.write:acme/**")
	write := url.Values{"scope": {"github.pr.write:acme/api"}, "resource": {apiGitHub}}

	before := e.snapshot()
	r := e.form("/oauth/token", "", e.exchangeForm("agent-1", id, write))
	if r.Status != http.StatusBadRequest || r.str("error") != "authorization_pending" || r.str("code") != "approval_required" ||
		!broker.ValidStepUpID(r.str("approval_id")) || r.str("approval_url") != publicURL+"/ui/approvals/"+r.str("approval_id") {
		t.Fatalf("step-up: %d %s", r.Status, r.Raw)
	}
	evs, err := e.st.AuditEvents(context.Background(), broker.HistoryFilter{AfterSeq: before.auditSeq, Limit: 5})
	if err != nil || len(evs) != 1 || evs[0].Type != broker.EventApprovalRequested {
		t.Fatalf("the decision's events: %+v %v", evs, err)
	}
	e.mustStatus(e.do("POST", "/v1/approvals/"+r.str("approval_id")+"/approve", e.user("alice", "eng"), nil), http.StatusOK)
	e.mustStatus(e.form("/oauth/token", "", e.exchangeForm("agent-1", id, write)), http.StatusOK)

	// Staging is not prod: no step-up. An Idempotency-Key retry is the
	// same credential, not a second one of the budget.
	stage := e.exchangeForm("agent-1", id, url.Values{"scope": {"github.pr.write:acme/api"}, "resource": {apiStage}})
	send := func() resp {
		body := stage.Encode()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", stringsReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Idempotency-Key", "exchange-"+id)
		return e.send(req, []byte(body))
	}
	first := e.mustStatus(send(), http.StatusOK)
	again := e.mustStatus(send(), http.StatusOK)
	a1, _ := e.tokens.Verify(context.Background(), first.str("access_token"))
	a2, _ := e.tokens.Verify(context.Background(), again.str("access_token"))
	if a1.JTI == "" || a1.JTI != a2.JTI {
		t.Fatalf("an idempotent retry minted another credential: %q, %q", a1.JTI, a2.JTI)
	}

	before = e.snapshot()
	r = e.form("/oauth/token", "", e.exchangeForm("agent-1", id, url.Values{"scope": {"github.pr.write:acme/api"}, "resource": {apiStage}}))
	e.oauthRefused(before, r, http.StatusBadRequest, "access_denied", "budget_exhausted")
}

// TestX02CIBAConcurrentPollsGiveOneToken: polls racing after approval
// give one token between them; the others are slow_down or
// invalid_grant, and the task has one credential.
func TestX02CIBAConcurrentPollsGiveOneToken(t *testing.T) {
	e := newEnv(t)
	ar := e.mustStatus(e.backchannel("bot", url.Values{"login_hint": {"alice"}, "scope": {readAcme},
		"resource": {apiGitHub}, "binding_message": {"race"}}), http.StatusOK).str("auth_req_id")
	id := e.pendingTask("alice")
	e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK)
	v := asClient(e.agent("bot"), url.Values{"grant_type": {grantCIBA}, "auth_req_id": {ar}})
	const n = 8
	got := make([]resp, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := v.Encode()
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", stringsReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			got[i] = decodeResp(res)
		}()
	}
	wg.Wait()
	tokens := 0
	for _, r := range got {
		switch {
		case r.Status == http.StatusOK:
			tokens++
		case r.str("error") == "slow_down", r.str("error") == "invalid_grant":
		default:
			t.Errorf("a racing poll answered %d %s", r.Status, r.Raw)
		}
	}
	var creds int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM credentials WHERE task_id = $1`, id).Scan(&creds); err != nil {
		t.Fatal(err)
	}
	if tokens != 1 || creds != 1 {
		t.Fatalf("%d tokens answered and %d credentials recorded, want 1 and 1", tokens, creds)
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// decodeResp reads an answer without the contract check, for requests
// sent from several goroutines (the check reports through e.t).
func decodeResp(res *http.Response) resp {
	out := resp{Status: res.StatusCode, Header: res.Header}
	out.Raw, _ = io.ReadAll(res.Body)
	_ = json.Unmarshal(out.Raw, &out.JSON)
	return out
}
