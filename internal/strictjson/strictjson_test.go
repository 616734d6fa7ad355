package strictjson

import (
	"strings"
	"testing"
)

func TestCheckKeys(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"a":"A","b":"a","c":["a","A"]}`, true}, // values are not keys
		{`[{"a":1},{"a":1},{"A":1}]`, true},       // keys of different objects
		{`{"a":[{"x":1}],"x":{"a":1}}`, true},
		{`{"a":1,"a":2}`, false},
		{`{"scopes":["x"],"SCOPES":["y"]}`, false},
		{`{"a":{"b":1,"B":2}}`, false},
		{`{"a":[{"k":1,"K":2}]}`, false},
		{`{"a":1,"x":{"y":2},"A":3}`, false}, // a duplicate after a nested object
		{`{"é":1}`, false},
		{"{\"a\":\"\xff\"}", false}, // invalid UTF-8
		{`{"a":1`, false},
		{`{"a":1}}`, false},
		{strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), true},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), false},
	} {
		if err := CheckKeys([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("CheckKeys(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}
