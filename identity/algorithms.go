package identity

import "slices"

// Algorithms lists the signing algorithms the verifier accepts from at
// least one trusted issuer, sorted: what an RFC 8414 server advertises as
// token_endpoint_auth_signing_alg_values_supported for the workload ID
// tokens its clients present as RFC 7523 client assertions.
func (v *Verifier) Algorithms() []string {
	var out []string
	for _, t := range v.issuers {
		for _, a := range t.cfg.Algorithms {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	slices.Sort(out)
	return out
}
