package broker

import (
	"fmt"
	"strconv"
	"strings"
)

// ChainError names the first audit event at which the chain is broken.
type ChainError struct {
	Seq    int64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Reason)
}

// Anchor is an event's seq and hash kept outside the database (printed by
// errand audit verify, written down by an auditor): a chain rewritten from
// before it, however consistently, no longer contains it.
type Anchor struct {
	Seq  int64
	Hash string
}

// ParseAnchor reads an anchor written as seq:hash.
func ParseAnchor(s string) (Anchor, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 1 || len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return Anchor{}, fmt.Errorf("anchor %q is not seq:hash (a seq from 1, 64 lowercase hex digits)", s)
	}
	return Anchor{Seq: n, Hash: hash}, nil
}

// ChainVerifier walks the audit log in seq order and finds the first
// edited, deleted, inserted or reordered event: every event must carry the
// next seq and the hash of its content linked to its predecessor's, under
// a scheme no older than its predecessor's (so an event cannot be passed
// off under a scheme the chain has left). Anchors, if any, must be met.
type ChainVerifier struct {
	prev    string
	next    int64
	count   int64
	scheme  int
	anchors map[int64]string
}

// NewChainVerifier starts at the genesis of the chain, expecting the
// given anchors on the way.
func NewChainVerifier(anchors ...Anchor) *ChainVerifier {
	v := &ChainVerifier{prev: GenesisHash, next: 1, anchors: map[int64]string{}}
	for _, a := range anchors {
		v.anchors[a.Seq] = a.Hash
	}
	return v
}

// Add checks the next event.
func (v *ChainVerifier) Add(e AuditEvent) error {
	switch {
	case e.Seq > v.next:
		return &ChainError{Seq: v.next, Reason: fmt.Sprintf("event missing (the next event present is %d)", e.Seq)}
	case e.Seq < v.next:
		return &ChainError{Seq: e.Seq, Reason: "event out of order or repeated"}
	case e.HashScheme < v.scheme:
		return &ChainError{Seq: e.Seq, Reason: fmt.Sprintf("hash scheme %d after scheme %d", e.HashScheme, v.scheme)}
	}
	want, err := chainHash(v.prev, e)
	if err != nil {
		return &ChainError{Seq: e.Seq, Reason: err.Error()}
	}
	if e.Hash != want {
		return &ChainError{Seq: e.Seq, Reason: "content or order does not match its hash"}
	}
	if a, ok := v.anchors[e.Seq]; ok && a != e.Hash {
		return &ChainError{Seq: e.Seq, Reason: fmt.Sprintf("the anchor says hash %s, the chain has %s", a, e.Hash)}
	}
	v.prev, v.next, v.count, v.scheme = e.Hash, v.next+1, v.count+1, e.HashScheme
	return nil
}

// Finish checks that the walk ended where the chain head says the log
// ends, so that removing the newest events is caught too, and that it
// passed every anchor.
func (v *ChainVerifier) Finish(headSeq int64, headHash string) error {
	if headSeq != v.next-1 {
		return &ChainError{Seq: v.next, Reason: fmt.Sprintf("the chain head says the log ends at %d, the events end at %d", headSeq, v.next-1)}
	}
	if headHash != v.prev {
		return &ChainError{Seq: headSeq, Reason: "the chain head's hash does not match the last event"}
	}
	for seq := range v.anchors {
		if seq > headSeq {
			return &ChainError{Seq: seq, Reason: fmt.Sprintf("the chain ends at seq %d, before the anchor", headSeq)}
		}
	}
	return nil
}

// Count is how many events were verified.
func (v *ChainVerifier) Count() int64 { return v.count }

// Head is the seq and hash of the last event verified.
func (v *ChainVerifier) Head() (int64, string) { return v.next - 1, v.prev }
