package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// GenesisHash is the "previous hash" of the first audit event.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ChainHash returns the hash of e linked to the previous event's hash: the
// SHA-256 of prev, a newline, and the canonical JSON of e without its hash.
// Every store computes it the same way, so a verifier can walk any of them.
//
// The canonical JSON is what encoding/json's Marshal makes of the event
// (HTML-escaped strings, the detail compacted). An event whose strings
// and detail Marshal would copy unchanged, which is nearly every event, is
// written directly: the same bytes without the reflection, a few
// microseconds of every mint. FuzzChainHash holds the two to the same
// bytes.
func ChainHash(prev string, e AuditEvent) string {
	detail := e.Detail
	if len(detail) == 0 {
		detail = []byte("{}")
	}
	var buf [512]byte
	canon, ok := appendPlainCanon(buf[:0], e, detail)
	if !ok {
		canon = marshalCanon(e, detail)
	}
	return hashOf(prev, canon)
}

func hashOf(prev string, canon []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}

// marshalCanon is the canonical JSON's definition.
func marshalCanon(e AuditEvent, detail []byte) []byte {
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
	return canon
}

// appendPlainCanon appends marshalCanon's bytes for an event whose strings
// are plain (printable ASCII that JSON and HTML escaping leave alone) and
// whose detail is plain and compact. It reports false, having appended
// garbage, for any other event. The detail is not validated: it is JSON
// this package marshalled (and PostgreSQL's json column checks what it
// stores); bytes that are not JSON hash to what no valid event hashes to.
func appendPlainCanon(dst []byte, e AuditEvent, detail []byte) ([]byte, bool) {
	if !plainString(e.Type) || !plainString(e.Actor.Kind) || !plainString(e.Actor.Issuer) ||
		!plainString(e.Actor.Subject) || !plainString(e.TaskID) || !plainCompactJSON(detail) {
		return dst, false
	}
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","type":"`...)
	dst = append(dst, e.Type...)
	dst = append(dst, `","actor":{"kind":"`...)
	dst = append(dst, e.Actor.Kind...)
	dst = append(dst, '"')
	if e.Actor.Issuer != "" {
		dst = append(dst, `,"iss":"`...)
		dst = append(dst, e.Actor.Issuer...)
		dst = append(dst, '"')
	}
	if e.Actor.Subject != "" {
		dst = append(dst, `,"sub":"`...)
		dst = append(dst, e.Actor.Subject...)
		dst = append(dst, '"')
	}
	dst = append(dst, `},"task_id":"`...)
	dst = append(dst, e.TaskID...)
	dst = append(dst, `","detail":`...)
	dst = append(dst, detail...)
	return append(dst, '}'), true
}

// plainByte is a byte encoding/json writes inside a string as itself.
func plainByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte(s[i]) {
			return false
		}
	}
	return true
}

// plainCompactJSON reports whether JSON text b is unchanged by Marshal's
// compaction of a RawMessage: no whitespace between tokens, and nothing
// inside strings that HTML escaping or UTF-8 repair would rewrite (escape
// sequences already in the text are kept as they are).
func plainCompactJSON(b []byte) bool {
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case in && c == '\\':
			i++ // the escaped byte; Compact copies the sequence unchanged
		case in && c == '"':
			in = false
		case in:
			if !plainByte(c) {
				return false
			}
		case c == '"':
			in = true
		case c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '&':
			return false
		}
	}
	return !in
}
