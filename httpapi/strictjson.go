package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/errandhq/errand/broker"
)

// maxJSONDepth bounds nesting; Errand's bodies are two levels deep.
const maxJSONDepth = 16

// strictJSON decodes exactly one JSON object into v. It refuses what the
// standard library lets through: duplicate keys and keys that differ only
// in case (encoding/json keeps the last and matches case-insensitively, so
// {"scopes":[narrow],"SCOPES":[wide]} would approve the wide set), deep
// nesting, unknown fields and trailing data.
func strictJSON(raw []byte, v any) error {
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return broker.Errorf(broker.ErrInvalidRequest, "the body must be a JSON object")
	}
	if err := scanKeys(raw); err != nil {
		return err
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

// scanKeys walks the tokens of raw and refuses duplicate or case-variant
// keys in any object, and nesting deeper than maxJSONDepth.
func scanKeys(raw []byte) error {
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
			return broker.Errorf(broker.ErrInvalidRequest, "malformed JSON body: %v", err)
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
				if len(stack) >= maxJSONDepth {
					return broker.Errorf(broker.ErrInvalidRequest, "JSON nested deeper than %d levels", maxJSONDepth)
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
				k := strings.ToLower(t)
				if top.keys[k] {
					return broker.Errorf(broker.ErrInvalidRequest, "duplicate or case-variant key %q", t)
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
