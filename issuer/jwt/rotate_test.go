package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

func kidsByState(t *testing.T, ks *memKeys) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	keys, _ := ks.SigningKeys(context.Background())
	for _, k := range keys {
		out[k.State] = append(out[k.State], k.KID)
	}
	return out
}

func jwksKIDs(t *testing.T, i *Issuer) string {
	t.Helper()
	var set struct{ Keys []struct{ Kid string } }
	if err := json.Unmarshal(i.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return strings.Join(kids, ",")
}

// TestKeyLifecycle walks a key through next, current, previous and
// retired on a fake clock: the JWKS always serves next, current and
// previous; tokens of a previous key verify for the overlap and no longer
// once it is retired.
func TestKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ks := &memKeys{now: clock}
	i := newIssuer(t, ks, "", clock)
	p := KeyPolicy{RotateEvery: 24 * time.Hour, Overlap: time.Hour}

	if _, err := i.Maintain(ctx, p); err != nil {
		t.Fatal(err)
	}
	st := kidsByState(t, ks)
	if len(st[broker.KeyCurrent]) != 1 || len(st[broker.KeyNext]) != 1 {
		t.Fatalf("after the first maintenance: %v", st)
	}
	first, next := st[broker.KeyCurrent][0], st[broker.KeyNext][0]
	if got := jwksKIDs(t, i); !strings.Contains(got, first) || !strings.Contains(got, next) {
		t.Fatalf("JWKS %s lacks the current or the next key", got)
	}
	oldTok, err := i.Sign(ctx, sample(now))
	if err != nil {
		t.Fatal(err)
	}

	// Not due yet: nothing changes.
	now = now.Add(23 * time.Hour)
	if c, err := i.Maintain(ctx, p); err != nil || !c.Empty() {
		t.Fatalf("a rotation before it was due: %+v %v", c, err)
	}
	// Due: next signs, the old key verifies as previous.
	now = now.Add(time.Hour)
	if _, err := i.Maintain(ctx, p); err != nil {
		t.Fatal(err)
	}
	st = kidsByState(t, ks)
	if st[broker.KeyCurrent][0] != next || st[broker.KeyPrevious][0] != first || len(st[broker.KeyNext]) != 1 {
		t.Fatalf("after the rotation: %v", st)
	}
	newTok, err := i.Sign(ctx, sample(now))
	if err != nil {
		t.Fatal(err)
	}
	if hdr, _ := header(newTok, TokenType); hdr.KID != next {
		t.Fatalf("signed with %s, want the promoted key %s", hdr.KID, next)
	}
	if got := jwksKIDs(t, i); strings.Count(got, ",") != 2 || !strings.Contains(got, first) {
		t.Fatalf("JWKS %s must hold next, current and previous", got)
	}
	// A token of the previous key verifies (its own exp aside: sign one
	// now with the previous key to test only the key's state).
	i.mu.Lock()
	i.current = i.byKID[first]
	i.mu.Unlock()
	prevTok, err := i.Sign(ctx, sample(now))
	if err != nil {
		t.Fatal(err)
	}
	if err := i.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Verify(ctx, prevTok); err != nil {
		t.Fatalf("a previous key's token within the overlap: %v", err)
	}
	// Past the overlap the previous key is retired: not served, not accepted.
	now = now.Add(time.Hour)
	if _, err := i.Maintain(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st = kidsByState(t, ks); len(st[broker.KeyRetired]) != 1 || st[broker.KeyRetired][0] != first {
		t.Fatalf("after the overlap: %v", st)
	}
	if got := jwksKIDs(t, i); strings.Contains(got, first) {
		t.Fatalf("the JWKS still serves the retired key: %s", got)
	}
	if _, err := i.Verify(ctx, prevTok); err == nil {
		t.Fatal("a retired key's token verified")
	}
	_ = oldTok
}

func TestRotateAndRetireOnDemand(t *testing.T) {
	ctx := context.Background()
	ks := &memKeys{}
	i := newIssuer(t, ks, "", nil)
	p := KeyPolicy{Overlap: time.Hour}
	// Without a next key published long enough, only a forced rotation runs.
	if _, err := i.Rotate(ctx, p, broker.Actor{Kind: "operator", Subject: "ops"}, false); !errors.Is(err, ErrNextTooYoung) {
		t.Fatalf("a rotation to an unpublished key: %v", err)
	}
	c, err := i.Rotate(ctx, p, broker.Actor{Kind: "operator", Subject: "ops"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Events) != 1 || !strings.Contains(string(c.Events[0].Detail), "rotated on demand") || c.Events[0].Actor.Kind != "operator" {
		t.Fatalf("the rotation's audit event: %+v", c.Events)
	}
	st := kidsByState(t, ks)
	if len(st[broker.KeyCurrent]) != 1 || len(st[broker.KeyPrevious]) != 1 || len(st[broker.KeyNext]) != 1 {
		t.Fatalf("after an on-demand rotation without a next key: %v", st)
	}
	if _, err := i.Retire(ctx, st[broker.KeyCurrent][0], broker.SystemActor); err == nil {
		t.Fatal("the current key was retired")
	}
	if _, err := i.Retire(ctx, st[broker.KeyPrevious][0], broker.SystemActor); err != nil {
		t.Fatal(err)
	}
	if st = kidsByState(t, ks); len(st[broker.KeyRetired]) != 1 {
		t.Fatalf("after retiring: %v", st)
	}
	if _, err := i.Retire(ctx, "nope", broker.SystemActor); err == nil {
		t.Fatal("an unknown key was retired")
	}
}

// A scheduled rotation waits until the next key has been published for
// MinNextAge (an upgrade from a version without next keys, a next key
// retired by hand): it never signs with a key no cached JWKS has.
func TestScheduledRotationWaitsForAPublishedNextKey(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ks := &memKeys{now: clock}
	i := newIssuer(t, ks, "", clock)
	p := KeyPolicy{RotateEvery: time.Hour, Overlap: time.Hour}
	now = now.Add(48 * time.Hour) // long due, and no next key yet
	if _, err := i.Maintain(ctx, p); err != nil {
		t.Fatal(err)
	}
	st := kidsByState(t, ks)
	if len(st[broker.KeyNext]) != 1 || len(st[broker.KeyPrevious]) != 0 {
		t.Fatalf("a due rotation without a published next key: %v", st)
	}
	now = now.Add(MinNextAge - time.Second)
	if c, _ := i.Maintain(ctx, p); !c.Empty() {
		t.Fatalf("rotated to a key published %s ago", MinNextAge-time.Second)
	}
	now = now.Add(time.Second)
	if _, err := i.Maintain(ctx, p); err != nil {
		t.Fatal(err)
	}
	if st := kidsByState(t, ks); len(st[broker.KeyPrevious]) != 1 {
		t.Fatalf("the rotation did not run once the next key was old enough: %v", st)
	}
}
