package config

import (
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
)

// withMCP is the valid config with the MCP server among the audiences.
var withMCP = strings.Replace(valid, "  - https://staging-api.example.com\n",
	"  - https://staging-api.example.com\n  - https://mcp.example.com/mcp\n", 1)

const idjagBlock = `
id_jag_targets:
  - issuer: https://auth.mcp.example.com
    audience_resources: [https://mcp.example.com/mcp]
    client_id: errand-agents
    scopes_map:
      github.repo.read: repo.read
      "github.pr.write:acme/api": pr.write
`

// TestIDJAGTargets: a valid target gets the 5m default and reaches the
// broker as written; each defect is refused naming its key, among them a
// resource that is not a configured audience (no approval could name it),
// a map value of several names (which would widen one scope into two) and
// a key that is no Errand scope or action.
func TestIDJAGTargets(t *testing.T) {
	c, err := Parse([]byte(withMCP+idjagBlock), goodEnv)
	if err != nil {
		t.Fatal(err)
	}
	got := c.BrokerIDJAGTargets()
	if len(got) != 1 || got[0].Issuer != "https://auth.mcp.example.com" || got[0].ClientID != "errand-agents" ||
		got[0].MaxLifetime != broker.DefaultIDJAGLifetime || got[0].ScopesMap["github.repo.read"] != "repo.read" ||
		len(got[0].Resources) != 1 {
		t.Fatalf("targets: %+v", got)
	}
	loop := strings.Replace(idjagBlock, "https://auth.mcp.example.com", "http://127.0.0.1:9000", 1)
	if c, err := Parse([]byte(withMCP+strings.Replace(loop, "client_id:", "max_lifetime: 90s\n    client_id:", 1)), goodEnv); err != nil ||
		c.BrokerIDJAGTargets()[0].MaxLifetime != 90*time.Second {
		t.Fatalf("a loopback http issuer with max_lifetime 90s: %v", err)
	}
	withEvents := strings.Replace(idjagBlock, "client_id:", "events_endpoint: https://auth.mcp.example.com/ssf/events?stream=1\n    client_id:", 1)
	if c, err := Parse([]byte(withMCP+withEvents), goodEnv); err != nil ||
		c.BrokerIDJAGTargets()[0].EventsEndpoint != "https://auth.mcp.example.com/ssf/events?stream=1" {
		t.Fatalf("an https events endpoint: %v", err)
	}
	bad := []struct{ name, old, new, key string }{
		{"http issuer", "https://auth.mcp.example.com", "http://auth.mcp.example.com", "id_jag_targets[0].issuer"},
		{"relative issuer", "https://auth.mcp.example.com", "auth.mcp.example.com", "id_jag_targets[0].issuer"},
		{"issuer with query", "https://auth.mcp.example.com", "https://auth.mcp.example.com?x=1", "id_jag_targets[0].issuer"},
		{"relative resource", "[https://mcp.example.com/mcp]", "[/mcp]", "id_jag_targets[0].audience_resources[0]"},
		{"resource not an audience", "[https://mcp.example.com/mcp]", "[https://other.example.com/mcp]", "id_jag_targets[0].audience_resources[0]"},
		{"no resources", "[https://mcp.example.com/mcp]", "[]", "id_jag_targets[0].audience_resources"},
		{"no client id", "client_id: errand-agents", "client_id: ''", "id_jag_targets[0].client_id"},
		{"lifetime over 5m", "client_id: errand-agents", "client_id: errand-agents\n    max_lifetime: 6m", "id_jag_targets[0].max_lifetime"},
		{"widening map value", ": repo.read", `: "repo.read repo.admin"`, `scopes_map["github.repo.read"]`},
		{"unknown action key", "github.repo.read: repo.read", "github.repo.admin: repo.read", "id_jag_targets[0].scopes_map"},
		{"malformed scope key", `"github.pr.write:acme/api"`, `"github.pr.write:"`, "id_jag_targets[0].scopes_map"},
		{"http events endpoint", "client_id: errand-agents", "client_id: errand-agents\n    events_endpoint: http://auth.mcp.example.com/events", "id_jag_targets[0].events_endpoint"},
		{"relative events endpoint", "client_id: errand-agents", "client_id: errand-agents\n    events_endpoint: /events", "id_jag_targets[0].events_endpoint"},
		{"events endpoint with userinfo", "client_id: errand-agents", "client_id: errand-agents\n    events_endpoint: https://u:p@auth.mcp.example.com/events", "id_jag_targets[0].events_endpoint"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := Parse([]byte(withMCP+strings.Replace(idjagBlock, b.old, b.new, 1)), goodEnv)
			if err == nil || !strings.Contains(err.Error(), b.key) {
				t.Fatalf("err = %v, want one naming %s", err, b.key)
			}
		})
	}
	twice := idjagBlock + strings.TrimPrefix(idjagBlock, "\nid_jag_targets:\n")
	if _, err := Parse([]byte(withMCP+twice), goodEnv); err == nil || !strings.Contains(err.Error(), "id_jag_targets[1].issuer") {
		t.Fatalf("a target given twice: %v", err)
	}
}
