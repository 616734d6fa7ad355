package strictjson

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

type body struct {
	OnBehalfOf string   `json:"on_behalf_of"`
	Goal       string   `json:"goal"`
	Scopes     []string `json:"scopes"`
	TTLSeconds int64    `json:"ttl_seconds"`
}

// FuzzStrictJSON: Decode never panics; whatever it accepts has no
// duplicate or case-variant key and decodes to exactly what
// encoding/json makes of it, so the two can never disagree about a body.
func FuzzStrictJSON(f *testing.F) {
	for _, s := range []string{
		`{"goal":"g","scopes":["a.b"]}`, `{"goal":"a","goal":"b"}`, `{"scopes":["x"],"SCOPES":["y"]}`,
		`{"goal":"g"} {"goal":"h"}`, `null`, `[` + strings.Repeat("[", 40), `{"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var strict body
		if err := Decode(raw, &strict); err != nil {
			return
		}
		if err := CheckKeys(raw); err != nil {
			t.Fatalf("accepted a body CheckKeys refuses: %v", err)
		}
		var std body
		if err := json.Unmarshal(raw, &std); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		if !reflect.DeepEqual(strict, std) {
			t.Fatalf("strict %+v != standard %+v", strict, std)
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) == nil {
			seen := map[string]bool{}
			for k := range m {
				if seen[strings.ToLower(k)] {
					t.Fatalf("case-variant keys accepted: %s", raw)
				}
				seen[strings.ToLower(k)] = true
			}
		}
	})
}
