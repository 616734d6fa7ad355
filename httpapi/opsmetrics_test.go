package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// metricsText is e's /metrics.
func metricsText(t *testing.T, e *env) string {
	t.Helper()
	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestApprovalHistogramExistsBeforeAnyDecision: every kind and decision of
// errand_approval_seconds is exported at 0 from the start, so that a rate
// over it reads 0, not nothing, until the first decision.
func TestApprovalHistogramExistsBeforeAnyDecision(t *testing.T) {
	e := newEnv(t)
	m := metricsText(t, e)
	for _, kind := range []string{"task", "step_up"} {
		for _, d := range []string{"approved", "denied"} {
			if want := "\nerrand_approval_seconds_count{decision=\"" + d + "\",kind=\"" + kind + "\"} 0\n"; !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
			}
		}
	}
}
