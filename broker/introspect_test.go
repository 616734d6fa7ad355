package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// A resource server learns whether a token is active: only its record,
// its task and the clock decide, and asking appends nothing to the audit
// trail.
func TestIntrospect(t *testing.T) {
	for _, tt := range []struct {
		name string
		// aud is the minted token's audience (apiAud unless set).
		aud    string
		caller broker.Principal
		// then runs after the mint; token may replace the token asked about.
		then       func(t *testing.T, e *flowEnv, task broker.Task, m broker.Minted) (token string)
		wantActive bool
	}{
		{name: "a live token", caller: rs, wantActive: true},
		{name: "a live token a second before it expires", caller: rs, wantActive: true,
			then: func(t *testing.T, e *flowEnv, _ broker.Task, m broker.Minted) string {
				e.clock.Advance(5*time.Minute - time.Second)
				return m.Token
			}},
		{name: "an expired token", caller: rs,
			then: func(t *testing.T, e *flowEnv, _ broker.Task, m broker.Minted) string {
				e.clock.Advance(5 * time.Minute)
				return m.Token
			}},
		{name: "a token the holder revoked", caller: rs,
			then: func(t *testing.T, e *flowEnv, _ broker.Task, m broker.Minted) string {
				if err := e.svc.RevokeToken(context.Background(), agent, m.Token); err != nil {
					t.Fatal(err)
				}
				return m.Token
			}},
		{name: "a closed task's token", caller: rs,
			then: func(t *testing.T, e *flowEnv, task broker.Task, m broker.Minted) string {
				if _, _, err := e.svc.Close(context.Background(), alice, task.ID); err != nil {
					t.Fatal(err)
				}
				return m.Token
			}},
		{name: "a token of a suspended agent", caller: rs,
			then: func(t *testing.T, e *flowEnv, task broker.Task, m broker.Minted) string {
				if _, _, err := e.svc.SuspendAgent(context.Background(), admin, agentsURL+"#bot", "leaked"); err != nil {
					t.Fatal(err)
				}
				return m.Token
			}},
		{name: "a forged signature", caller: rs,
			then: func(t *testing.T, e *flowEnv, _ broker.Task, m broker.Minted) string {
				return m.Token[:len(m.Token)-4] + "AAAA"
			}},
		{name: "not a token", caller: rs,
			then: func(*testing.T, *flowEnv, broker.Task, broker.Minted) string { return "not-a-jwt" }},
		{name: "an audience only another server may introspect", aud: vaultAud, caller: rs},
		{name: "that audience's own introspector", aud: vaultAud, caller: ledgerRS, wantActive: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newFlowEnv(t)
			r := readReq()
			r.Audiences = []string{apiAud, vaultAud}
			task := e.approved(t, r)
			aud := apiAud
			if tt.aud != "" {
				aud = tt.aud
			}
			m, err := e.svc.Mint(ctx, agent, task.ID, broker.MintRequest{Scopes: []string{"repo.read:acme/api"}, Audience: aud})
			if err != nil {
				t.Fatal(err)
			}
			token := m.Token
			if tt.then != nil {
				token = tt.then(t, e, task, m)
			}
			e.skip(t)
			in, err := e.svc.Introspect(ctx, tt.caller, token)
			if err != nil {
				t.Fatal(err)
			}
			if in.Active != tt.wantActive {
				t.Fatalf("active = %v, want %v", in.Active, tt.wantActive)
			}
			if tt.wantActive {
				if in.Credential.ID != m.Credential.ID || in.Task.ID != task.ID || in.Token.Audience != aud ||
					in.Token.Subject != "alice" || !in.Now.Equal(e.clock.Now()) {
					t.Errorf("introspection %+v", in)
				}
			} else if in.Credential.ID != "" || in.Task.ID != "" {
				t.Errorf("an inactive answer tells about %q of %q", in.Credential.ID, in.Task.ID)
			}
			e.wantEvents(t) // introspection is not audited
		})
	}
}

// Only resource servers introspect.
func TestIntrospectRefusals(t *testing.T) {
	for _, caller := range []broker.Principal{agent, alice, auditor} {
		t.Run(string(caller.Kind)+" "+caller.Subject, func(t *testing.T) {
			e := newFlowEnv(t)
			task := e.approved(t, readReq())
			m := e.mint(t, task.ID, "repo.read:acme/api")
			e.skip(t)
			in, err := e.svc.Introspect(context.Background(), caller, m.Token)
			if in.Active {
				t.Fatal("active for a caller that is no resource server")
			}
			e.refused(t, err, broker.ErrWrongPrincipalKind, caller, "", "introspect")
		})
	}
}
