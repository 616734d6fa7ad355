package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// GenesisHash is the "previous hash" of the first audit event.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ChainHash returns the hash of e linked to the previous event's hash: the
// SHA-256 of prev, a newline, and the canonical JSON of e without its hash.
// Every store computes it the same way, so a verifier can walk any of them.
func ChainHash(prev string, e AuditEvent) string {
	detail := json.RawMessage(e.Detail)
	if len(detail) == 0 {
		detail = json.RawMessage("{}")
	}
	canon, err := json.Marshal(struct {
		Seq    int64           `json:"seq"`
		Time   string          `json:"time"`
		Type   string          `json:"type"`
		Actor  Actor           `json:"actor"`
		TaskID string          `json:"task_id"`
		Detail json.RawMessage `json:"detail"`
	}{e.Seq, e.Time.UTC().Format(time.RFC3339Nano), e.Type, e.Actor, e.TaskID, detail})
	if err != nil {
		// Detail is produced by this package and is valid JSON.
		panic("broker: audit event not encodable: " + err.Error())
	}
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}
