package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// GenesisHash is the "previous hash" of the first audit event.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// The hash schemes of the audit chain: how an event is made into the bytes
// its hash covers. Every event records its scheme (the hash_scheme column),
// so that a chain begun under an older scheme still verifies after the
// change; a chain never goes back to an older scheme (see ChainVerifier).
// docs/audit-chain.md defines them for verifiers in other languages.
const (
	// HashSchemeGoJSON is the form of the events written before the
	// audit chain moved to JCS: what encoding/json's Marshal makes of the
	// event's fields in a fixed order (HTML-escaped strings, the detail
	// compacted). Only Go reproduces it exactly; it is kept so that those
	// events stay verifiable, and nothing is appended with it any more.
	HashSchemeGoJSON = 1
	// HashSchemeJCS is the RFC 8785 JSON Canonicalization Scheme of the
	// event as an object (its detail canonicalised too), which any
	// language can reproduce.
	HashSchemeJCS = 2
	// HashSchemeCurrent is the scheme of every event appended now.
	HashSchemeCurrent = HashSchemeJCS
)

// ChainHash returns the hash of e linked to the previous event's hash: the
// SHA-256 of prev, a newline, and the canonical form of e (without its
// hash) under e.HashScheme. Every store computes it the same way, so a
// verifier can walk any of them. It panics for an event it cannot hash
// (an unknown scheme, a detail that is not JSON): the stores append only
// events this package built. ChainVerifier reports such events instead.
func ChainHash(prev string, e AuditEvent) string {
	h, err := chainHash(prev, e)
	if err != nil {
		panic("broker: audit event not hashable: " + err.Error())
	}
	return h
}

func chainHash(prev string, e AuditEvent) (string, error) {
	detail := e.Detail
	if len(detail) == 0 {
		detail = []byte("{}")
	}
	var buf [512]byte
	switch e.HashScheme {
	case HashSchemeJCS:
		canon, err := appendJCSCanon(buf[:0], e, detail)
		if err != nil {
			return "", err
		}
		return hashOf(prev, canon), nil
	case HashSchemeGoJSON:
		canon, ok := appendPlainCanon(buf[:0], e, detail)
		if !ok {
			if !json.Valid(detail) {
				return "", errors.New("detail is not JSON")
			}
			canon = marshalCanon(e, detail)
		}
		return hashOf(prev, canon), nil
	}
	return "", fmt.Errorf("unknown hash scheme %d", e.HashScheme)
}

// appendJCSCanon appends the RFC 8785 canonical form of the object
//
//	{"actor": {"iss": …, "kind": …, "sub": …}, "detail": …, "hash_scheme": 2,
//	 "seq": …, "task_id": …, "time": …, "type": …}
//
// (iss and sub left out when empty, time in RFC 3339 UTC with the
// fraction's trailing zeros dropped): the members written directly in
// JCS's order, the detail through the JCS library. It fails for a detail
// that is not I-JSON (invalid UTF-8 or lone surrogates in it, or not JSON).
func appendJCSCanon(dst []byte, e AuditEvent, detail []byte) ([]byte, error) {
	cd, err := canonicalDetail(detail)
	if err != nil {
		return nil, err
	}
	dst = append(dst, `{"actor":{`...)
	if e.Actor.Issuer != "" {
		dst = append(dst, `"iss":`...)
		dst = appendJCSString(dst, e.Actor.Issuer)
		dst = append(dst, ',')
	}
	dst = append(dst, `"kind":`...)
	dst = appendJCSString(dst, e.Actor.Kind)
	if e.Actor.Subject != "" {
		dst = append(dst, `,"sub":`...)
		dst = appendJCSString(dst, e.Actor.Subject)
	}
	dst = append(dst, `},"detail":`...)
	dst = append(dst, cd...)
	dst = append(dst, `,"hash_scheme":2,"seq":`...)
	if e.Seq > -maxSafeInt && e.Seq < maxSafeInt {
		dst = strconv.AppendInt(dst, e.Seq, 10)
	} else {
		// JCS writes every number as ECMAScript writes the nearest double.
		n, err := jcs.NumberToJSON(float64(e.Seq))
		if err != nil {
			return nil, err
		}
		dst = append(dst, n...)
	}
	dst = append(dst, `,"task_id":`...)
	dst = appendJCSString(dst, e.TaskID)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","type":`...)
	dst = appendJCSString(dst, e.Type)
	return append(dst, '}'), nil
}

// maxSafeInt is 2^53: every integer of smaller magnitude is a double
// exactly, which ECMAScript writes as its decimal digits.
const maxSafeInt = 1 << 53

// canonicalDetail is the JCS form of the detail. A detail that is its own
// JCS form already is returned as it is: Errand's details are marshalled
// maps or structs with sorted fields, ASCII strings and integers, and
// checking that costs a tenth of canonicalising (see BenchmarkChainHash).
// FuzzCanonicalDetail holds the check to the library.
func canonicalDetail(detail []byte) ([]byte, error) {
	if n, ok := scanCanonical(detail, 0, 0); ok && n == len(detail) {
		return detail, nil
	}
	cd, err := jcs.Transform(detail)
	if err != nil {
		return nil, fmt.Errorf("detail is not I-JSON: %w", err)
	}
	return cd, nil
}

// scanCanonical reads the JSON value at b[i:] and reports where it ends
// and whether it is certainly in JCS form, under rules narrower than
// JCS's (any value outside them goes to the library): no whitespace;
// strings of printable ASCII whose only escapes are \" and \\; object
// keys without escapes, in strictly increasing byte order (which is
// UTF-16 order for ASCII, and excludes duplicates); numbers that are
// integers of at most 15 digits, not -0 (written by ECMAScript as they
// are); literals; at most 32 levels deep.
func scanCanonical(b []byte, i, depth int) (int, bool) {
	if i >= len(b) || depth > 32 {
		return i, false
	}
	switch c := b[i]; {
	case c == '{':
		i++
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		var last []byte
		for first := true; ; first = false {
			start := i
			end, ok := scanCanonicalString(b, i)
			if !ok {
				return i, false
			}
			key := b[start+1 : end-1]
			for _, k := range key {
				if k == '\\' {
					return i, false
				}
			}
			if !first && string(key) <= string(last) {
				return i, false
			}
			last = key
			if end >= len(b) || b[end] != ':' {
				return i, false
			}
			if i, ok = scanCanonical(b, end+1, depth+1); !ok || i >= len(b) {
				return i, false
			}
			if b[i] == '}' {
				return i + 1, true
			}
			if b[i] != ',' {
				return i, false
			}
			i++
		}
	case c == '[':
		i++
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = scanCanonical(b, i, depth+1); !ok || i >= len(b) {
				return i, false
			}
			if b[i] == ']' {
				return i + 1, true
			}
			if b[i] != ',' {
				return i, false
			}
			i++
		}
	case c == '"':
		return scanCanonicalString(b, i)
	case c == '-' || c >= '0' && c <= '9':
		start := i
		if c == '-' {
			i++
		}
		digits := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		n := i - digits
		if n == 0 || n > 15 || b[digits] == '0' && (n > 1 || c == '-') {
			return start, false
		}
		return i, true
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
				return i + len(lit), true
			}
		}
		return i, false
	}
}

// scanCanonicalString reads the string at b[i:] (b[i] is '"') and reports
// where it ends and whether it is printable ASCII with no escapes but \"
// and \\.
func scanCanonicalString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(b) || b[i+1] != '"' && b[i+1] != '\\' {
				return i, false
			}
			i++
		case c < 0x20 || c >= 0x7f:
			return i, false
		}
	}
	return i, false
}

// appendJCSString appends s as RFC 8785 writes a string: quoted, with only
// the quote, the backslash and the control characters escaped (\b \t \n
// \f \r short, the others as \u00xx), everything else as its UTF-8. A
// byte that is not UTF-8 is written as U+FFFD, as encoding/json (and so
// errand audit export) writes it.
func appendJCSString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\ufffd"...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
	}
	return append(dst, '"')
}

func hashOf(prev string, canon []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}

// marshalCanon is HashSchemeGoJSON's definition. Events whose strings and
// detail Marshal would copy unchanged are written directly by
// appendPlainCanon, the same bytes without the reflection; FuzzChainHash
// holds the two to the same bytes.
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
