package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/errandhq/errand/broker"
)

// strictJSON decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func strictJSON(raw []byte, v any) error {
	if string(bytes.TrimSpace(raw)) == "null" || !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return broker.Errorf(broker.ErrInvalidRequest, "the body must be a JSON object")
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
