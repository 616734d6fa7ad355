package broker

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Kind is the kind of a principal, fixed by the issuer that vouched for it.
// Kinds never compare equal to each other: an agent and a user with the same
// subject are two different principals.
type Kind string

const (
	KindAgent    Kind = "agent"
	KindUser     Kind = "user"
	KindResource Kind = "resource"
)

// Valid reports whether k is one of the three kinds.
func (k Kind) Valid() bool {
	return k == KindAgent || k == KindUser || k == KindResource
}

// Principal is a verified caller: (Issuer, Subject, Kind) is its identity.
type Principal struct {
	Issuer  string
	Subject string
	Kind    Kind
	// Groups are the user's groups from the issuer's groups claim.
	Groups []string
	// Auditor is set for users in the issuer's auditor group.
	Auditor bool
	// Admin is set for users in the issuer's admin group: they may suspend
	// an agent (the kill switch).
	Admin bool
}

// Ref is the (issuer, subject) pair that names a principal of a known kind.
type Ref struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
}

// Ref returns p's issuer and subject.
func (p Principal) Ref() Ref { return Ref{Issuer: p.Issuer, Subject: p.Subject} }

// String is "<issuer>#<subject>", the form docs/design.md uses for on_behalf_of;
// a principal of a SPIFFE trust domain is its bare SPIFFE ID, which names
// its trust domain already.
func (r Ref) String() string {
	if r.IsSPIFFE() {
		return r.Subject
	}
	return r.Issuer + "#" + r.Subject
}

// IsSPIFFE reports whether r is a workload of a SPIFFE trust domain: its
// issuer is spiffe://<trust domain> and its subject a SPIFFE ID in it.
func (r Ref) IsSPIFFE() bool {
	return strings.HasPrefix(r.Issuer, "spiffe://") && !strings.Contains(r.Issuer[len("spiffe://"):], "/") &&
		strings.HasPrefix(r.Subject, r.Issuer+"/")
}

// SPIFFERef reads a bare SPIFFE ID as the principal it names:
// (spiffe://<trust domain>, the ID).
func SPIFFERef(s string) (Ref, bool) {
	id, err := spiffeid.FromString(s)
	if err != nil || id.Path() == "" {
		return Ref{}, false
	}
	return Ref{Issuer: id.TrustDomain().IDString(), Subject: s}, true
}

// Is reports whether p is the principal of kind k named by r.
func (p Principal) Is(k Kind, r Ref) bool {
	return p.Kind == k && p.Issuer == r.Issuer && p.Subject == r.Subject
}

// Actor is how a principal is recorded in the audit trail.
type Actor struct {
	Kind    string `json:"kind"`
	Issuer  string `json:"iss,omitempty"`
	Subject string `json:"sub,omitempty"`
}

// SystemActor is Errand itself, for the sweeper's and workers' events.
var SystemActor = Actor{Kind: "system"}

// ActorOf returns the audit actor for p. The zero Principal is "anonymous".
func ActorOf(p Principal) Actor {
	if p.Kind == "" {
		return Actor{Kind: "anonymous"}
	}
	return Actor{Kind: string(p.Kind), Issuer: p.Issuer, Subject: p.Subject}
}

// Naming is how Errand writes its principals in what it issues: the sub,
// client_id and act of an access token and of its introspection answer.
// A subject is unique only within its issuer (RFC 7519 §4.1.2), so with
// several issuers of a kind a principal of that kind is written
// "<issuer>#<subject>"; with one it is its bare subject, as a
// single-issuer deployment has always seen it.
type Naming struct {
	// Users and Agents are the URLs of the issuers of kind user and agent.
	Users, Agents []string
}

// User is how u is written as a token's sub.
func (n Naming) User(u Ref) string { return nameIn(n.Users, u) }

// Agent is how a is written as a token's client_id and act.sub.
func (n Naming) Agent(a Ref) string { return nameIn(n.Agents, a) }

func nameIn(issuers []string, r Ref) string {
	if len(issuers) > 1 {
		return r.String()
	}
	return r.Subject
}

// AccessToken is the token of credential c of task t, its principals
// written by n. Signing it again gives the same claims (and, with EdDSA,
// the same token); introspection compares a presented token's principals
// with these.
func (n Naming) AccessToken(t Task, c Credential) AccessToken {
	agent := n.Agent(t.Agent)
	return AccessToken{
		Subject: n.User(t.User), Act: Ref{Issuer: t.Agent.Issuer, Subject: agent}, ClientID: agent,
		Audience: c.Audience, Scope: strings.Join(c.Scopes.Strings(), " "),
		TaskID: t.ID, JTI: c.ID, IssuedAt: c.IssuedAt, NotBefore: c.IssuedAt, ExpiresAt: c.ExpiresAt,
		JKT: c.JKT,
	}
}
