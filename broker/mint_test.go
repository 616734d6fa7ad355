package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// thumbprint stands for the RFC 7638 thumbprint of a DPoP key whose proof
// the caller checked.
const thumbprint = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

// An approved task's agent mints a token within the approval; the
// credential and its credential.issued event are recorded at the clock's
// time, and the signed token carries exactly the recorded claims.
func TestMint(t *testing.T) {
	for _, tt := range []struct {
		name       string
		task       func() broker.CreateTaskRequest
		req        broker.MintRequest
		wantTTL    int64
		wantScopes []string
	}{
		{"the longest token", readReq, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud},
			300, []string{"repo.read:acme/api"}},
		{"a shorter token", readReq, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, TTLSeconds: 60},
			60, []string{"repo.read:acme/api"}},
		{"no longer than the task", func() broker.CreateTaskRequest {
			r := readReq()
			r.TTLSeconds = 120
			return r
		}, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud}, 120, []string{"repo.read:acme/api"}},
		{"the whole approval", readReq, broker.MintRequest{Scopes: []string{"repo.read:acme/**"}, Audience: apiAud},
			300, []string{"repo.read:acme/**"}},
		{"bound to a DPoP key", readReq, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, JKT: thumbprint},
			300, []string{"repo.read:acme/api"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.approved(t, tt.task())
			e.skip(t)
			m, err := e.svc.Mint(context.Background(), agent, task.ID, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			c := m.Credential
			if m.ExpiresIn != tt.wantTTL || m.Replayed || c.TaskID != task.ID || c.Kind != "jwt" ||
				!c.IssuedAt.Equal(t0) || !c.ExpiresAt.Equal(t0.Add(time.Duration(tt.wantTTL)*time.Second)) ||
				!slices.Equal(c.Scopes.Strings(), tt.wantScopes) || c.Audience != apiAud || c.JKT != tt.req.JKT {
				t.Fatalf("minted %+v (expires in %d)", c, m.ExpiresIn)
			}
			stored, err := e.st.Credential(context.Background(), c.ID)
			if err != nil || !stored.ExpiresAt.Equal(c.ExpiresAt) || !stored.RevokedAt.IsZero() {
				t.Fatalf("stored credential %+v, %v", stored, err)
			}
			at, err := e.tokens.Verify(context.Background(), m.Token)
			if err != nil {
				t.Fatal(err)
			}
			if at.JTI != c.ID || at.TaskID != task.ID || at.Subject != "alice" || at.ClientID != "bot" ||
				at.Scope != tt.wantScopes[0] || at.Audience != apiAud || !at.ExpiresAt.Equal(c.ExpiresAt) || at.JKT != tt.req.JKT {
				t.Errorf("token claims %+v", at)
			}
			got := e.wantEvents(t, ev{Type: broker.EventCredentialIssued, Actor: agent, Task: task.ID})
			d := detailOf(t, got[0])
			if d["jti_sha256"] != broker.HashID(c.ID) || d["audience"] != apiAud || d["kind"] != "jwt" ||
				!slices.Equal(strs(d["scopes"]), tt.wantScopes) || d["expires_at"] != c.ExpiresAt.Format(time.RFC3339) {
				t.Errorf("credential.issued detail = %v", d)
			}
			if jkt, _ := d["jkt"].(string); jkt != tt.req.JKT {
				t.Errorf("credential.issued jkt = %q, want %q", jkt, tt.req.JKT)
			}
		})
	}
}

// A refused mint records no credential, appends nothing itself, and its
// refusal is recorded with its code.
func TestMintRefusals(t *testing.T) {
	read := broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud}
	for _, tt := range []struct {
		name   string
		caller broker.Principal
		task   func() broker.CreateTaskRequest
		// setup runs after the task is approved (unless pending).
		setup   func(t *testing.T, e *flowEnv, id string)
		pending bool
		req     broker.MintRequest
		want    *broker.Error
	}{
		{name: "scopes beyond the approval", caller: agent, want: broker.ErrScopeExceedsApproval,
			req: broker.MintRequest{Scopes: []string{"repo.read:other/api"}, Audience: apiAud}},
		{name: "an action not approved", caller: agent, want: broker.ErrScopeExceedsApproval,
			req: broker.MintRequest{Scopes: []string{"pr.write:acme/web"}, Audience: apiAud}},
		{name: "an audience not approved", caller: agent, want: broker.ErrScopeExceedsApproval,
			req: broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: vaultAud}},
		{name: "an unknown audience", caller: agent, want: broker.ErrInvalidRequest,
			req: broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: "https://elsewhere.test"}},
		{name: "another agent", caller: agent2, req: read, want: broker.ErrNotTaskParty},
		{name: "the task's user", caller: alice, req: read, want: broker.ErrWrongPrincipalKind},
		{name: "a pending task", caller: agent, pending: true, req: read, want: broker.ErrTaskNotActive},
		{name: "an expired task", caller: agent, req: read, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, id string) { e.clock.Advance(time.Hour) }},
		{name: "a closed task", caller: agent, req: read, want: broker.ErrTaskNotActive,
			setup: func(t *testing.T, e *flowEnv, id string) {
				if _, _, err := e.svc.Close(context.Background(), agent, id); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "a suspended agent", caller: agent, req: read, want: broker.ErrAgentSuspended,
			setup: func(t *testing.T, e *flowEnv, id string) {
				if _, _, err := e.svc.SuspendAgent(context.Background(), admin, agentsURL+"#bot", "leaked"); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "a task that requires DPoP, without a proof", caller: agent, req: read, want: broker.ErrDPoPRequired,
			task: func() broker.CreateTaskRequest { r := readReq(); r.RequireDPoP = true; return r }},
		{name: "a negative ttl", caller: agent, want: broker.ErrInvalidRequest,
			req: broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, TTLSeconds: -5}},
		{name: "a malformed Idempotency-Key", caller: agent, want: broker.ErrInvalidRequest,
			req: broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, IdempotencyKey: "a b"}},
		{name: "the budget is spent", caller: agent, req: read, want: broker.ErrBudgetExhausted,
			task:  func() broker.CreateTaskRequest { r := readReq(); r.MaxCredentials = 1; return r },
			setup: func(t *testing.T, e *flowEnv, id string) { e.mint(t, id, "repo.read:acme/api") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			req := readReq
			if tt.task != nil {
				req = tt.task
			}
			var task broker.Task
			if tt.pending {
				task = e.create(t, agent, req())
			} else {
				task = e.approved(t, req())
			}
			if tt.setup != nil {
				tt.setup(t, e, task.ID)
			}
			e.skip(t)
			before := credentials(t, e, task.ID)
			_, err := e.svc.Mint(context.Background(), tt.caller, task.ID, tt.req)
			e.refused(t, err, tt.want, tt.caller, task.ID, "mint")
			if after := credentials(t, e, task.ID); len(after) != len(before) {
				t.Fatalf("a refused mint recorded a credential: %d → %d", len(before), len(after))
			}
		})
	}
}

func credentials(t *testing.T, e *flowEnv, taskID string) []broker.Credential {
	t.Helper()
	cs, err := e.st.Credentials(context.Background(), broker.HistoryFilter{TaskID: taskID, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// A retry with the same Idempotency-Key and request gets the credential
// minted the first time, appending nothing; any other use of the key is
// a conflict.
func TestMintIdempotency(t *testing.T) {
	ctx := context.Background()
	req := broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, IdempotencyKey: "retry-1"}
	for _, tt := range []struct {
		name string
		// first and then are the two requests; between runs in between.
		first, then broker.MintRequest
		between     func(t *testing.T, e *flowEnv, id string)
		want        *broker.Error // nil: a replay
	}{
		{name: "the same request", first: req, then: req},
		{name: "the same request a minute later", first: req, then: req,
			between: func(t *testing.T, e *flowEnv, id string) { e.clock.Advance(time.Minute) }},
		{name: "another scope", first: req, want: broker.ErrIdempotencyConflict,
			then: broker.MintRequest{Scopes: []string{"repo.read:acme/web"}, Audience: apiAud, IdempotencyKey: "retry-1"}},
		{name: "another ttl", first: req, want: broker.ErrIdempotencyConflict,
			then: broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, TTLSeconds: 30, IdempotencyKey: "retry-1"}},
		{name: "a DPoP key the first had not", first: req, want: broker.ErrIdempotencyConflict,
			then: broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, IdempotencyKey: "retry-1", JKT: thumbprint}},
		{name: "after the credential expired", first: req, then: req, want: broker.ErrIdempotencyConflict,
			between: func(t *testing.T, e *flowEnv, id string) { e.clock.Advance(5 * time.Minute) }},
		{name: "after the credential was revoked", first: req, then: req, want: broker.ErrIdempotencyConflict,
			between: func(t *testing.T, e *flowEnv, id string) {
				m, err := e.st.Credentials(ctx, broker.HistoryFilter{TaskID: id, Limit: 1})
				if err != nil || len(m) != 1 {
					t.Fatal(m, err)
				}
				if err := e.st.InTx(ctx, func(tx broker.Tx) error {
					_, err := tx.RevokeCredential(ctx, m[0].ID, e.clock.Now())
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.approved(t, readReq())
			e.skip(t)
			first, err := e.svc.Mint(ctx, agent, task.ID, tt.first)
			if err != nil {
				t.Fatal(err)
			}
			e.wantEvents(t, ev{Type: broker.EventCredentialIssued, Actor: agent, Task: task.ID})
			if tt.between != nil {
				tt.between(t, e, task.ID)
			}
			e.skip(t)
			again, err := e.svc.Mint(ctx, agent, task.ID, tt.then)
			if tt.want != nil {
				e.refused(t, err, tt.want, agent, task.ID, "mint")
				if n := len(credentials(t, e, task.ID)); n != 1 {
					t.Fatalf("%d credentials after a conflict, want 1", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			left := int64(first.Credential.ExpiresAt.Sub(e.clock.Now()) / time.Second)
			if !again.Replayed || again.Credential.ID != first.Credential.ID || again.ExpiresIn != left {
				t.Fatalf("replay: replayed %v, jti %s (first %s), expires in %d (want %d)",
					again.Replayed, again.Credential.ID, first.Credential.ID, again.ExpiresIn, left)
			}
			if at, err := e.tokens.Verify(ctx, again.Token); err != nil || at.JTI != first.Credential.ID {
				t.Fatalf("the replayed token: %+v, %v", at, err)
			}
			e.wantEvents(t) // a replay issues nothing new
			if n := len(credentials(t, e, task.ID)); n != 1 {
				t.Fatalf("%d credentials after a replay, want 1", n)
			}
		})
	}
}

// A task that requires DPoP mints only bound tokens.
func TestMintDPoPRequired(t *testing.T) {
	e := newFlowEnv(t)
	r := readReq()
	r.RequireDPoP = true
	task := e.approved(t, r)
	if !task.RequireDPoP {
		t.Fatal("the task does not record that it requires DPoP")
	}
	e.skip(t)
	_, err := e.svc.Mint(context.Background(), agent, task.ID, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud})
	e.refused(t, err, broker.ErrDPoPRequired, agent, task.ID, "mint")
	m, err := e.svc.Mint(context.Background(), agent, task.ID,
		broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: apiAud, JKT: thumbprint})
	if err != nil {
		t.Fatal(err)
	}
	if m.Credential.JKT != thumbprint {
		t.Fatalf("bound credential jkt %q", m.Credential.JKT)
	}
	got := e.wantEvents(t, ev{Type: broker.EventCredentialIssued, Actor: agent, Task: task.ID})
	if detailOf(t, got[0])["jkt"] != thumbprint {
		t.Errorf("credential.issued detail = %v", detailOf(t, got[0]))
	}
}
