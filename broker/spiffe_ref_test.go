package broker

import "testing"

// A principal of a SPIFFE trust domain is written, and read back, as its
// bare SPIFFE ID; anything else keeps "<issuer>#<sub>".
func TestSPIFFERefs(t *testing.T) {
	id := "spiffe://prod.example.org/ns/agents/sa/agent-7"
	r, ok := SPIFFERef(id)
	if !ok || r != (Ref{Issuer: "spiffe://prod.example.org", Subject: id}) || r.String() != id {
		t.Fatalf("SPIFFERef(%s) = %+v %v, written %s", id, r, ok, r.String())
	}
	if p, err := ParseAgent(id); err != nil || p != r {
		t.Fatalf("ParseAgent(%s) = %+v %v", id, p, err)
	}
	if n := (Naming{Agents: []string{"https://agents.example", "spiffe://prod.example.org"}}); n.Agent(r) != id {
		t.Fatalf("with several agent issuers: %s", n.Agent(r))
	}
	for _, s := range []string{"spiffe://prod.example.org", "spiffe://prod.example.org/", "spiffe:///x", "spiffe://a#b/c", "https://x/y"} {
		if r, ok := SPIFFERef(s); ok {
			t.Errorf("SPIFFERef(%q) = %+v", s, r)
		}
	}
	// An OIDC agent whose sub looks like a SPIFFE ID stays issuer-qualified.
	o := Ref{Issuer: "https://agents.example", Subject: id}
	if o.IsSPIFFE() || o.String() != "https://agents.example#"+id {
		t.Fatalf("OIDC ref written %s", o.String())
	}
	if p, err := ParseAgent("https://agents.example#" + id); err != nil || p != o {
		t.Fatalf("ParseAgent of an OIDC agent: %+v %v", p, err)
	}
}
