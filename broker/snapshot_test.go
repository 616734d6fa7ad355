package broker

import (
	"fmt"
	"testing"
	"time"
)

// The database's clock is carried forward on the local monotonic clock,
// and forgotten when its reading is too old to trust.
func TestDBClock(t *testing.T) {
	var c dbClock
	local := time.Now()
	if _, ok := c.now(local); ok {
		t.Fatal("a clock never read gave a time")
	}
	db := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c.observe(db, local)
	if got, ok := c.now(local.Add(1500 * time.Millisecond)); !ok || !got.Equal(db.Add(1500*time.Millisecond)) {
		t.Fatalf("now = %v, %v; want %v", got, ok, db.Add(1500*time.Millisecond))
	}
	// An older reading arriving late does not replace a newer one.
	c.observe(db.Add(-time.Hour), local.Add(-time.Millisecond))
	if got, _ := c.now(local); !got.Equal(db) {
		t.Fatalf("a late, older reading moved the clock to %v", got)
	}
	// A reading older than dbClockFresh is not trusted, nor one from the
	// local clock's future.
	if _, ok := c.now(local.Add(dbClockFresh + time.Second)); ok {
		t.Fatal("a stale reading was trusted")
	}
	if _, ok := c.now(local.Add(-time.Second)); ok {
		t.Fatal("a reading from the future was trusted")
	}
}

// Snapshots are bounded; the newest is kept.
func TestTaskSnapsBounded(t *testing.T) {
	var c taskSnaps
	for i := 0; i < maxSnaps+100; i++ {
		c.put(Task{ID: fmt.Sprint(i), Version: 1})
	}
	if len(c.m) != maxSnaps {
		t.Fatalf("%d snapshots kept, want %d", len(c.m), maxSnaps)
	}
	if _, ok := c.get(fmt.Sprint(maxSnaps + 99)); !ok {
		t.Fatal("the newest snapshot was dropped")
	}
	c.put(Task{ID: fmt.Sprint(maxSnaps + 99), Version: 2})
	if k, _ := c.get(fmt.Sprint(maxSnaps + 99)); k.Version != 2 || len(c.m) != maxSnaps {
		t.Fatalf("replacing a snapshot: version %d, %d kept", k.Version, len(c.m))
	}
}

// The issued event's detail, written from a struct, is byte for byte what
// the map it replaced gave.
func TestIssuedDetailMatchesTheMap(t *testing.T) {
	c := Credential{ID: "j", TaskID: "tsk_1", Kind: "jwt", Audience: "https://api", ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Scopes: Scopes{MustParseScope("a.read:x/**"), MustParseScope("b.write:y")}, StepUpID: "apr_1"}
	got := issuedEvent(Principal{Kind: KindAgent}, c, time.Now(), "git <&>", "ds").Detail
	want := detail(map[string]any{
		"kind": "jwt", "jti_sha256": HashID(c.ID), "scopes": c.Scopes.Strings(),
		"audience": c.Audience, "expires_at": c.ExpiresAt,
		"tool": "git <&>", "dataset": "ds", "step_up_id": c.StepUpID,
	})
	if string(got) != string(want) {
		t.Fatalf("detail\n%s\nwant\n%s", got, want)
	}
	// An ID-JAG's names its kind and its resource.
	c.Kind = KindIDJAG
	got = issuedEventFor(Principal{Kind: KindAgent}, c, time.Now(), "git <&>", "ds", "https://mcp/mcp").Detail
	want = detail(map[string]any{
		"kind": KindIDJAG, "jti_sha256": HashID(c.ID), "scopes": c.Scopes.Strings(),
		"audience": c.Audience, "expires_at": c.ExpiresAt, "resource": "https://mcp/mcp",
		"tool": "git <&>", "dataset": "ds", "step_up_id": c.StepUpID,
	})
	if string(got) != string(want) {
		t.Fatalf("ID-JAG detail\n%s\nwant\n%s", got, want)
	}
}
