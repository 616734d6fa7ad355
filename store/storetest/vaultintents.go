package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// testVaultIntents: an intent of a per-task Vault token is recorded
// pending, read back, listed once stale, resolved exactly once, and a
// vault-token credential is found by its accessor.
func testVaultIntents(t *testing.T, s Store) {
	k := newTask(id("agent-"), id("user-"))
	insert(t, s, &k)
	created := now().Add(-time.Minute)
	in := broker.VaultIntent{ID: id("vti_"), TaskID: k.ID, State: broker.IntentPending, CreatedAt: created}
	young := broker.VaultIntent{ID: id("vti_"), TaskID: k.ID, State: broker.IntentPending, CreatedAt: now()}
	accessor := id("acc-")
	in2tx := func(fn func(broker.SecretTx) error) error {
		return s.InTx(ctx, func(tx broker.Tx) error {
			return fn(tx)
		})
	}
	if err := in2tx(func(st broker.SecretTx) error {
		if err := st.InsertVaultIntent(ctx, in); err != nil {
			return err
		}
		return st.InsertVaultIntent(ctx, young)
	}); err != nil {
		t.Fatal(err)
	}
	if err := in2tx(func(st broker.SecretTx) error {
		got, err := st.VaultIntent(ctx, in.ID)
		if err != nil {
			return err
		}
		if got.TaskID != k.ID || got.State != broker.IntentPending || !got.CreatedAt.Equal(created) || got.Accessor != "" || !got.ResolvedAt.IsZero() {
			t.Errorf("intent read back as %+v", got)
		}
		if _, err := st.VaultIntent(ctx, "vti_nope"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("unknown intent: %v", err)
		}
		stale, err := st.StaleVaultIntents(ctx, now().Add(-30*time.Second), 1000)
		if err != nil {
			return err
		}
		mine := 0
		for _, s := range stale {
			if s.ID == young.ID {
				t.Error("a young intent was listed as stale")
			}
			if s.ID == in.ID {
				mine++
			}
		}
		if mine != 1 {
			t.Errorf("the stale intent was listed %d times", mine)
		}
		if ok, err := st.VaultTokenRecorded(ctx, accessor); err != nil || ok {
			t.Errorf("an unknown accessor is recorded: %v %v", ok, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	at := now()
	if err := in2tx(func(st broker.SecretTx) error {
		ok, err := st.ResolveVaultIntent(ctx, in.ID, broker.IntentRecorded, accessor, at)
		if err != nil || !ok {
			t.Errorf("first resolution: %v %v", ok, err)
		}
		ok, err = st.ResolveVaultIntent(ctx, in.ID, broker.IntentOrphaned, "other", at)
		if err != nil || ok {
			t.Errorf("second resolution of one intent: %v %v", ok, err)
		}
		got, err := st.VaultIntent(ctx, in.ID)
		if err != nil || got.State != broker.IntentRecorded || got.Accessor != accessor || !got.ResolvedAt.Equal(at) {
			t.Errorf("resolved intent %+v %v", got, err)
		}
		stale, err := st.StaleVaultIntents(ctx, now(), 1000)
		for _, s := range stale {
			if s.ID == in.ID {
				t.Error("a resolved intent is listed as pending")
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	c := broker.Credential{ID: accessor, TaskID: k.ID, Kind: broker.KindVaultToken, Agent: k.Agent, User: k.User,
		Scopes: k.Scopes, Audience: "vault", IssuedAt: at, ExpiresAt: k.ExpiresAt}
	if err := s.InTx(ctx, func(tx broker.Tx) error { return tx.InsertCredential(ctx, &c) }); err != nil {
		t.Fatal(err)
	}
	if err := in2tx(func(st broker.SecretTx) error {
		if ok, err := st.VaultTokenRecorded(ctx, accessor); err != nil || !ok {
			t.Errorf("a recorded accessor is not found: %v %v", ok, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
