// Package strictjson decodes and checks JSON more strictly than
// encoding/json: duplicate keys and keys that differ only in case are
// refused (the standard library keeps the last and matches fields
// case-insensitively, so {"scopes":[narrow],"SCOPES":[wide]} would take
// the wide set), as are deep nesting, unknown fields and trailing data.
// It is used for request bodies and for identity-token payloads.
package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/errandhq/errand/broker"
)

// MaxDepth bounds nesting, of objects and arrays alike; Errand's deepest
// body, an AuthZEN batch (evaluations, each with its subject), nests four.
const MaxDepth = 16

// Decode decodes exactly one JSON object into v, refusing unknown fields.
// Errors are broker.ErrInvalidRequest.
func Decode(raw []byte, v any) error {
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return broker.Errorf(broker.ErrInvalidRequest, "the body must be a JSON object")
	}
	if err := CheckKeys(raw); err != nil {
		return broker.Errorf(broker.ErrInvalidRequest, "%v", err)
	}
	// encoding/json's semantics (jsonv1.DefaultOptionsV1) run on the
	// go-json-experiment implementation, the basis of encoding/json/v2:
	// the same result, several times faster on request bodies.
	// Trailing data is refused too.
	if err := jsonv2.Unmarshal(raw, v, jsonv1.DefaultOptionsV1(), jsonv2.RejectUnknownMembers(true)); err != nil {
		return broker.Errorf(broker.ErrInvalidRequest, "malformed JSON body: %v", err)
	}
	return nil
}

// CheckKeys walks the tokens of raw and refuses malformed JSON (invalid
// UTF-8 included), duplicate or case-variant keys, non-ASCII keys, and
// nesting deeper than MaxDepth. It uses the jsontext tokenizer (of
// go-json-experiment, already a dependency through cedar-go), which reads
// a token without boxing it: on request bodies the standard library's
// Decoder.Token cost more than the decoding itself.
func CheckKeys(raw []byte) error {
	// Exact duplicates are caught below with the case variants.
	dec := jsontext.NewDecoder(bytes.NewReader(raw), jsontext.AllowDuplicateNames(true))
	var keys []map[string]bool // of each open object, by depth; nil for arrays
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("malformed JSON: %v", err)
		}
		depth := dec.StackDepth()
		switch tok.Kind() {
		case '{', '[':
			if depth > MaxDepth {
				return fmt.Errorf("JSON nested deeper than %d levels", MaxDepth)
			}
			var m map[string]bool
			if tok.Kind() == '{' {
				m = map[string]bool{}
			}
			keys = append(keys, m)
		case '}', ']':
			keys = keys[:len(keys)-1]
		case '"':
			// A name is an object's odd-numbered token so far.
			if kind, n := dec.StackIndex(depth); kind != '{' || n%2 != 1 {
				continue
			}
			name := tok.String()
			for i := 0; i < len(name); i++ {
				if name[i] >= 0x80 {
					return fmt.Errorf("non-ASCII key %q", name)
				}
			}
			k := strings.ToLower(name)
			top := keys[len(keys)-1]
			if top[k] {
				return fmt.Errorf("duplicate or case-variant key %q", name)
			}
			top[k] = true
		}
	}
}
