package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// Mint's two branches both run on SQLite: the first mint of a task locks
// it (and keeps a snapshot), the next ones are recorded on the snapshot;
// a change made through another replica (another Service on the same
// store) bumps the task's version, so the store refuses the stale
// snapshot and the locked branch answers, with the change applied.
func TestMintBranchesAndAStaleSnapshot(t *testing.T) {
	ctx := context.Background()
	e := newFSMEnv(t)
	other := e.withCatalog(t, e.svc.Catalog()) // a second replica, same store
	agent := broker.Principal{Issuer: "https://agents", Subject: "bot", Kind: broker.KindAgent}
	user := broker.Principal{Issuer: "https://users", Subject: "alice", Kind: broker.KindUser, Groups: []string{"g"}}
	req := broker.MintRequest{Scopes: []string{"r.read:a/b"}, Audience: "https://rs"}
	task, err := e.svc.CreateTask(ctx, agent, broker.CreateTaskRequest{OnBehalfOf: "alice", Goal: "g",
		Scopes: []string{"r.read:a/**"}, Audiences: []string{"https://rs"}, TTLSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Approve(ctx, user, task.ID, broker.ApproveRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Mint(ctx, agent, task.ID, req); err != nil {
		t.Fatal(err)
	}
	if n := e.svc.QuickMints(); n != 0 {
		t.Fatalf("the first mint of a task was recorded on a snapshot (%d)", n)
	}
	for i := 0; i < 3; i++ {
		e.clock = e.clock.Add(time.Second)
		m, err := e.svc.Mint(ctx, agent, task.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Credential.IssuedAt.Equal(e.clock.Truncate(time.Second)) || m.Credential.ExpiresAt.Sub(m.Credential.IssuedAt) != broker.DefaultTokenTTLMax {
			t.Fatalf("snapshot mint at %v: issued %v, expires %v", e.clock, m.Credential.IssuedAt, m.Credential.ExpiresAt)
		}
	}
	if n := e.svc.QuickMints(); n != 3 {
		t.Fatalf("%d mints recorded on the snapshot, want 3", n)
	}
	// The other replica closes the task: this one's snapshot is stale.
	if _, _, err := other.Close(ctx, user, task.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Mint(ctx, agent, task.ID, req)
	if broker.CodeOf(err) != broker.ErrTaskNotActive.Code {
		t.Fatalf("mint on a stale snapshot of a closed task: %v, want %s", err, broker.ErrTaskNotActive.Code)
	}
	if n := e.svc.QuickMints(); n != 3 {
		t.Fatalf("a stale snapshot recorded a credential (%d)", n)
	}
	creds, err := e.st.Credentials(ctx, broker.HistoryFilter{TaskID: task.ID, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range creds {
		if c.RevokedAt.IsZero() {
			t.Fatalf("credential %s outlived its task's close", c.ShownID())
		}
	}
	if len(creds) != 4 {
		t.Fatalf("%d credentials recorded, want 4", len(creds))
	}
}
