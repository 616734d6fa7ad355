package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// TestR04KillSwitchRefusesNamesOfNoAgent: the kill switch used to answer
// {"suspended":true,"tasks_ended":0} for any <issuer>#<sub>, while the
// real agent kept minting. A name whose issuer is not exactly a configured
// agent issuer is refused (400, nothing changed, audited), for suspend and
// unsuspend; the exact name suspends the agent and says what it ended.
func TestR04KillSwitchRefusesNamesOfNoAgent(t *testing.T) {
	e := newEnv(t)
	id := e.approved("r04-rogue", "alice", "github.repo.read:acme/**")
	e.mustStatus(e.mint("r04-rogue", id, "github.repo.read:acme/api"), http.StatusCreated)
	admin := e.users.Token(t, "root", audience, map[string]any{"groups": []string{"admins"}})
	for name, agent := range map[string]string{
		"trailing slash on the issuer":  e.agents.URL + "/#r04-rogue",
		"upper-case host":               strings.Replace(e.agents.URL, "127.0.0.1", "LOCALHOST", 1) + "#r04-rogue",
		"unconfigured issuer":           "https://agents.elsewhere.example#r04-rogue",
		"a user issuer's subject":       e.users.URL + "#r04-rogue",
		"a resource issuer's subject":   e.resources.URL + "#r04-rogue",
		"an untrusted issuer's subject": e.untrusted.URL + "#r04-rogue",
	} {
		for _, path := range []string{"/v1/agents/suspend", "/v1/agents/unsuspend"} {
			before := e.snapshot()
			e.refused(before, e.do("POST", path, admin, map[string]any{"agent": agent, "reason": "x"}), 400, "invalid_request")
			_ = name
		}
	}
	// The agent was never suspended: it still mints.
	e.mustStatus(e.mint("r04-rogue", id, "github.repo.read:acme/api"), http.StatusCreated)
	r := e.mustStatus(e.do("POST", "/v1/agents/suspend", admin, map[string]any{"agent": e.agents.URL + "#r04-rogue", "reason": "x"}), 200)
	if r.JSON["tasks_ended"] != float64(1) || r.JSON["revoked"] != float64(2) {
		t.Fatalf("suspend of the real agent: %s", r.Raw)
	}
	if m := e.mint("r04-rogue", id, "github.repo.read:acme/api"); m.Status == http.StatusCreated {
		t.Fatalf("a suspended agent minted: %s", m.Raw)
	}
}
