package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/dpop"
)

// dpopReplay is the store's replay cache, shared by replicas, as the
// DPoP verifier asks for it: proofs' identifiers of kind ReplayDPoP.
type dpopReplay struct{ svc *broker.Service }

func (d dpopReplay) Remember(ctx context.Context, id string, exp time.Time) (bool, error) {
	return d.svc.RememberJTI(ctx, broker.ReplayDPoP, id, exp)
}

// dpopKey checks r's DPoP proof (RFC 9449 §4.3) for r's method and its URL
// under Errand's public URL (never the Host header), and returns the
// thumbprint of its key. present is false, and err nil, when r has no
// DPoP header: a bearer request. A header that is not exactly one valid,
// unused proof is ErrInvalidDPoPProof; an unreachable replay cache is an
// outage (ErrUnavailable), never an acceptance.
func (s *Server) dpopKey(r *http.Request) (jkt string, present bool, err error) {
	vals := r.Header.Values("DPoP")
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", true, broker.Errorf(broker.ErrInvalidDPoPProof, "more than one DPoP header")
	}
	p, err := s.dpop.Verify(r.Context(), vals[0], dpop.Request{Method: r.Method, URL: s.self + r.URL.EscapedPath()})
	if errors.Is(err, dpop.ErrUseNonce) {
		return "", true, broker.Errorf(broker.ErrUseDPoPNonce, "the proof must carry the nonce of the DPoP-Nonce header")
	}
	if errors.Is(err, dpop.ErrInvalidProof) {
		return "", true, broker.Errorf(broker.ErrInvalidDPoPProof, "%s",
			strings.TrimPrefix(err.Error(), dpop.ErrInvalidProof.Error()+": "))
	}
	if err != nil {
		return "", true, err
	}
	return p.JKT, true, nil
}

// offerNonce sets a fresh server nonce in the DPoP-Nonce header when
// nonces are required (RFC 9449 §8.2: any answer may carry the next one).
func (s *Server) offerNonce(w http.ResponseWriter) {
	if n := s.dpop.Nonce(); n != "" {
		w.Header().Set("DPoP-Nonce", n)
	}
}

// dpopNonceKey is the nonce key of every replica: derived from the cursor
// key, which every replica derives from system_secret.
func dpopNonceKey(cursorKey []byte) []byte {
	m := hmac.New(sha256.New, cursorKey)
	m.Write([]byte("errand dpop nonce key v1"))
	return m.Sum(nil)
}

// tokenType is the token_type of a credential's token: DPoP when it is
// bound to a key (RFC 9449 §5), Bearer otherwise.
func tokenType(c broker.Credential) string {
	if c.JKT != "" {
		return "DPoP"
	}
	return "Bearer"
}
