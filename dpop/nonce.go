package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"
)

// ErrUseNonce: the proof is valid but lacks a current server nonce (RFC
// 9449 §8): the answer is the OAuth error use_dpop_nonce with a fresh
// nonce in the DPoP-Nonce header, and the client retries with it.
var ErrUseNonce = errors.New("dpop: a current server nonce is required")

// Nonces issues and checks server-provided nonces (RFC 9449 §8) without
// keeping any: a nonce names its period (the clock divided by Every) and
// carries a MAC of it under a key every replica shares, so that any
// replica accepts what another issued. A nonce is accepted in its period
// and the next, so it lives between one and two periods.
type Nonces struct {
	key   []byte
	every time.Duration
	now   func() time.Time
}

// NewNonces returns nonces under key (at least 32 bytes, the same on every
// replica), rotating every period, on the clock now (default time.Now).
func NewNonces(key []byte, every time.Duration, now func() time.Time) (*Nonces, error) {
	if len(key) < 32 {
		return nil, errors.New("dpop: a nonce key of at least 32 bytes is required")
	}
	if every < time.Second {
		return nil, errors.New("dpop: the nonce period must be at least a second")
	}
	if now == nil {
		now = time.Now
	}
	return &Nonces{key: append([]byte(nil), key...), every: every, now: now}, nil
}

// Issue returns the current nonce.
func (n *Nonces) Issue() string { return n.of(n.period()) }

func (n *Nonces) period() uint64 { return uint64(n.now().UnixNano() / int64(n.every)) }

func (n *Nonces) of(p uint64) string {
	b := binary.BigEndian.AppendUint64(nil, p)
	m := hmac.New(sha256.New, n.key)
	m.Write([]byte("errand dpop nonce v1\x00"))
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(append(b, m.Sum(nil)[:16]...))
}

// valid reports whether s is the nonce of this period or the last.
func (n *Nonces) valid(s string) bool {
	if len(s) != 32 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 24 {
		return false
	}
	p, now := binary.BigEndian.Uint64(b[:8]), n.period()
	if p != now && p+1 != now {
		return false
	}
	return hmac.Equal([]byte(n.of(p)), []byte(s))
}
