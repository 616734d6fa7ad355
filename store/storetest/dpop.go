package storetest

import (
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// testDPoPBindingKept: a task's require_dpop and a credential's jkt
// (migration 00013) are read back by every read, and an update of the
// task (which never names them) leaves them as written: a bound
// credential is never read as a bearer one.
func testDPoPBindingKept(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	k.RequireDPoP = true
	insert(t, s, &k)
	got, err := s.Task(ctx, k.ID)
	if err != nil || !got.RequireDPoP {
		t.Fatalf("Task: require_dpop %v, %v", got.RequireDPoP, err)
	}
	approved := got
	approved.Status, approved.Version, approved.ApprovedAt = broker.StatusApproved, 2, now()
	approved.ApprovedScopes, approved.ApprovedAudiences = k.Scopes, k.Audiences
	approved.RequireDPoP = false // UpdateTask must not write it
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.UpdateTask(ctx, approved) }); err != nil {
		t.Fatal(err)
	}
	const jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	bound := broker.Credential{ID: id("jti-"), TaskID: k.ID, Kind: broker.KindJWT, Agent: k.Agent, User: k.User,
		Scopes: k.Scopes, Audience: "https://api.github.com", IssuedAt: now(), ExpiresAt: now().Add(time.Minute),
		IdempotencyKey: "bound-1", RequestHash: "h", JKT: jkt}
	bearer := bound
	bearer.ID, bearer.IdempotencyKey, bearer.JKT = id("jti-"), "", ""
	var locked broker.Task
	err = s.InTx(ctx, func(tx broker.Tx) error {
		var err error
		if locked, err = tx.LockTask(ctx, k.ID); err != nil {
			return err
		}
		if err := tx.InsertCredential(ctx, &bound); err != nil {
			return err
		}
		return tx.InsertCredential(ctx, &bearer)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !locked.RequireDPoP {
		t.Fatal("LockTask lost require_dpop, or UpdateTask cleared it")
	}
	if c, err := s.Credential(ctx, bound.ID); err != nil || c.JKT != jkt {
		t.Fatalf("Credential: jkt %q, %v", c.JKT, err)
	}
	if c, err := s.Credential(ctx, bearer.ID); err != nil || c.JKT != "" {
		t.Fatalf("bearer Credential: jkt %q, %v", c.JKT, err)
	}
	var byKey broker.Credential
	var revoked []broker.Credential
	err = s.InTx(ctx, func(tx broker.Tx) error {
		var err error
		if byKey, err = tx.CredentialByIdempotencyKey(ctx, k.ID, "bound-1"); err != nil {
			return err
		}
		revoked, err = tx.RevokeCredentials(ctx, k.ID, now())
		return err
	})
	if err != nil || byKey.JKT != jkt {
		t.Fatalf("CredentialByIdempotencyKey: jkt %q, %v", byKey.JKT, err)
	}
	for _, c := range revoked {
		if (c.ID == bound.ID) != (c.JKT == jkt) {
			t.Fatalf("RevokeCredentials: %s read with jkt %q", c.ID, c.JKT)
		}
	}
	if len(revoked) != 2 {
		t.Fatalf("revoked %d credentials, want 2", len(revoked))
	}
	c, tk, _, err := s.CredentialAndTask(ctx, bound.ID)
	if err != nil || c.JKT != jkt || !tk.RequireDPoP {
		t.Fatalf("CredentialAndTask: jkt %q, require_dpop %v, %v", c.JKT, tk.RequireDPoP, err)
	}
}
