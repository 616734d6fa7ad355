// Package strictjson decodes and checks JSON more strictly than
// encoding/json: duplicate keys and keys that differ only in case are
// refused (the standard library keeps the last and matches fields
// case-insensitively, so {"scopes":[narrow],"SCOPES":[wide]} would take
// the wide set), as are deep nesting, unknown fields and trailing data.
// It is used for request bodies and for identity-token payloads.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/errandhq/errand/broker"
)

// MaxDepth bounds nesting; Errand's bodies are two levels deep.
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
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return broker.Errorf(broker.ErrInvalidRequest, "malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return broker.Errorf(broker.ErrInvalidRequest, "trailing data after the JSON body")
	}
	return nil
}

// CheckKeys walks the tokens of raw and refuses duplicate or case-variant
// keys in any object, nesting deeper than MaxDepth, and malformed JSON.
func CheckKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		object  bool
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("malformed JSON: %v", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.object {
					top.wantKey = true
				}
				if len(stack) >= MaxDepth {
					return fmt.Errorf("JSON nested deeper than %d levels", MaxDepth)
				}
				stack = append(stack, &frame{object: t == '{', keys: map[string]bool{}, wantKey: true})
			case '}', ']':
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].wantKey = true
				}
			}
		case string:
			if top != nil && top.object && top.wantKey {
				// encoding/json folds keys with Unicode simple folding
				// (ſ matches s, K matches k), so only ASCII keys are
				// allowed: their folding is plain lower-casing.
				for i := 0; i < len(t); i++ {
					if t[i] >= 0x80 {
						return fmt.Errorf("non-ASCII key %q", t)
					}
				}
				k := strings.ToLower(t)
				if top.keys[k] {
					return fmt.Errorf("duplicate or case-variant key %q", t)
				}
				top.keys[k] = true
				top.wantKey = false
				continue
			}
			if top != nil && top.object {
				top.wantKey = true
			}
		default:
			if top != nil && top.object {
				top.wantKey = true
			}
		}
	}
}
