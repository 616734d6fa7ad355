package config

import (
	"strings"
	"testing"
)

// TestR03StreamLimits reads limits.streams_per_principal and
// streams_per_replica, fills the server's defaults (4, 2000) when absent,
// and refuses a value that is not a positive whole number.
func TestR03StreamLimits(t *testing.T) {
	const plain = "limits: {token_ttl_max: 5m, task_ttl_max: 8h}"
	c, err := Parse([]byte(valid), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.StreamsPerPrincipal != 4 || c.Limits.StreamsPerReplica != 2000 {
		t.Fatalf("absent limits read as %d and %d", c.Limits.StreamsPerPrincipal, c.Limits.StreamsPerReplica)
	}
	raw := strings.Replace(valid, plain,
		"limits: {token_ttl_max: 5m, task_ttl_max: 8h, streams_per_principal: 2, streams_per_replica: 500}", 1)
	if raw == valid {
		t.Fatal("test bug: nothing replaced")
	}
	if c, err = Parse([]byte(raw), goodEnv); err != nil {
		t.Fatal(err)
	}
	if c.Limits.StreamsPerPrincipal != 2 || c.Limits.StreamsPerReplica != 500 {
		t.Fatalf("streams_per_principal %d, streams_per_replica %d", c.Limits.StreamsPerPrincipal, c.Limits.StreamsPerReplica)
	}
	for _, bad := range []string{"streams_per_principal: 0", "streams_per_replica: -1", "streams_per_replica: many"} {
		raw := strings.Replace(valid, plain, "limits: {token_ttl_max: 5m, task_ttl_max: 8h, "+bad+"}", 1)
		key := strings.SplitN(bad, ":", 2)[0]
		if _, err := Parse([]byte(raw), goodEnv); err == nil || !strings.Contains(err.Error(), "limits."+key) {
			t.Fatalf("%s: err = %v, want it to name limits.%s", bad, err, key)
		}
	}
}
