package httpapi

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestH05HeldTaskLockNeverDelaysAnotherTasksMint: a transaction holding
// one task's row (here a client's, for 5 s; in life a close, or any long
// transaction) holds up that task's mints only. Before, the mint waiting
// for it sat in the group commit and every other task's mint waited with
// it, for seconds. The other task's mints must finish in well under a
// second, and the held task's mint still succeeds once the lock is gone.
func TestH05HeldTaskLockNeverDelaysAnotherTasksMint(t *testing.T) {
	e := newEnv(t)
	a := e.approved("h05-a", "alice", "github.repo.read:acme/**")
	b := e.approved("h05-b", "alice", "github.repo.read:acme/**")
	// Both tasks minted once: their snapshots are cached, so the next
	// mints try the quick path, whose statement locks the tasks too.
	e.mustStatus(e.mint("h05-a", a, "github.repo.read:acme/api"), http.StatusCreated)
	e.mustStatus(e.mint("h05-b", b, "github.repo.read:acme/api"), http.StatusCreated)

	ctx := context.Background()
	tx, err := e.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE`, a); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	tokA, tokB := e.agent("h05-a"), e.agent("h05-b")
	body := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
	doneA := make(chan resp, 1)
	go func() { doneA <- e.do("POST", "/v1/tasks/"+a+"/tokens", tokA, body) }()
	time.Sleep(300 * time.Millisecond) // a's mint is now waiting in (or behind) a group

	for i := 0; i < 5; i++ {
		start := time.Now()
		r := e.do("POST", "/v1/tasks/"+b+"/tokens", tokB, body)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("mint %d of another task took %v while task a's row was held", i, took)
		}
		if r.Status != http.StatusCreated {
			t.Fatalf("mint %d of another task: %d %s", i, r.Status, r.Raw)
		}
	}
	select {
	case r := <-doneA:
		t.Fatalf("task a's mint answered while its row was held: %d %s", r.Status, r.Raw)
	default:
	}
	time.Sleep(time.Until(held.Add(5 * time.Second)))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-doneA:
		if r.Status != http.StatusCreated {
			t.Fatalf("task a's mint after the lock was released: %d %s", r.Status, r.Raw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("task a's mint never finished after the lock was released")
	}
}
