package httpapi

import (
	"github.com/errandhq/errand/api"
	"github.com/errandhq/errand/broker"
)

// scopeDetailJSON is what the catalog says of a scope: its action's class
// and risk. Views for approvers show it beside each scope, so that what a
// decision grants is read from the catalog, never from the agent's words
// (H09). Class and risk are absent when the action has left the catalog.
type scopeDetailJSON = api.ScopeDetail

// scopeDetails describes every distinct scope of sets, in order.
func (s *Server) scopeDetails(sets ...broker.Scopes) []scopeDetailJSON {
	out := []scopeDetailJSON{}
	seen := map[string]bool{}
	for _, set := range sets {
		for _, sc := range set {
			name := sc.String()
			if seen[name] {
				continue
			}
			seen[name] = true
			d := scopeDetailJSON{Scope: name}
			if a, ok := s.svc.Catalog().Action(sc.Action); ok {
				d.Class, d.Risk, d.Description = string(a.Class), string(a.Risk), a.Description
			}
			out = append(out, d)
		}
	}
	return out
}
