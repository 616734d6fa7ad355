package broker

import "fmt"

// ChainError names the first audit event at which the chain is broken.
type ChainError struct {
	Seq    int64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Reason)
}

// ChainVerifier walks the audit log in seq order and finds the first
// edited, deleted, inserted or reordered event: every event must carry the
// next seq and the hash of its content linked to its predecessor's.
type ChainVerifier struct {
	prev  string
	next  int64
	count int64
}

// NewChainVerifier starts at the genesis of the chain.
func NewChainVerifier() *ChainVerifier { return &ChainVerifier{prev: GenesisHash, next: 1} }

// Add checks the next event.
func (v *ChainVerifier) Add(e AuditEvent) error {
	switch {
	case e.Seq > v.next:
		return &ChainError{Seq: v.next, Reason: fmt.Sprintf("event missing (the next event present is %d)", e.Seq)}
	case e.Seq < v.next:
		return &ChainError{Seq: e.Seq, Reason: "event out of order or repeated"}
	}
	if want := ChainHash(v.prev, e); e.Hash != want {
		return &ChainError{Seq: e.Seq, Reason: "content or order does not match its hash"}
	}
	v.prev, v.next, v.count = e.Hash, v.next+1, v.count+1
	return nil
}

// Finish checks that the walk ended where the chain head says the log
// ends, so that removing the newest events is caught too.
func (v *ChainVerifier) Finish(headSeq int64, headHash string) error {
	if headSeq != v.next-1 {
		return &ChainError{Seq: v.next, Reason: fmt.Sprintf("the chain head says the log ends at %d, the events end at %d", headSeq, v.next-1)}
	}
	if headHash != v.prev {
		return &ChainError{Seq: headSeq, Reason: "the chain head's hash does not match the last event"}
	}
	return nil
}

// Count is how many events were verified.
func (v *ChainVerifier) Count() int64 { return v.count }
