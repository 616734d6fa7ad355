package strictjson

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// body has the field kinds of Errand's request bodies: strings, string
// lists, integers, booleans, optional nested objects and free-form maps
// (a task's fields and an AuthZEN evaluation's, which BenchmarkDecode
// decodes).
type body struct {
	OnBehalfOf string         `json:"on_behalf_of"`
	Goal       string         `json:"goal"`
	Scopes     []string       `json:"scopes"`
	TTLSeconds int64          `json:"ttl_seconds"`
	Approve    bool           `json:"approve"`
	Subject    *azEntity      `json:"subject"`
	Resource   *azEntity      `json:"resource"`
	Action     *azEntity      `json:"action"`
	Context    map[string]any `json:"context"`
}

type azEntity struct {
	Type       string         `json:"type"`
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	Properties map[string]any `json:"properties"`
}

// FuzzStrictJSON: Decode never panics; whatever it accepts has no
// duplicate or case-variant key and decodes to exactly what
// encoding/json makes of it, so the two can never disagree about a body.
func FuzzStrictJSON(f *testing.F) {
	for _, s := range []string{
		`{"goal":"g","scopes":["a.b"]}`, `{"goal":"a","goal":"b"}`, `{"scopes":["x"],"SCOPES":["y"]}`,
		`{"goal":"g"} {"goal":"h"}`, `null`, `[` + strings.Repeat("[", 40), `{"x":1}`,
		`{"subject":{"type":"t","id":"x","properties":{"a":[1,2.5,"s",null,true]}},"context":{"n":{"m":{}}}}`,
		`{"approve":true,"ttl_seconds":1e2,"subject":null}`, `{"Goal":"g","TTL_SECONDS":3}`, `{"ttl_seconds":"3"}`,
		string(benchBody),
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
