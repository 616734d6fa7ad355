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

// An AuthZEN evaluation's body, the largest on a hot path: a token and
// four small objects.
var benchBody = []byte(`{"subject":{"type":"errand_token","id":"eyJhbGciOiJFZERTQSIsImtpZCI6ImstMDEyMzQ1Njc4OSIsInR5cCI6ImF0K2p3dCJ9.eyJpc3MiOiJodHRwczovL2VycmFuZC5leGFtcGxlIiwic3ViIjoiYWxpY2UiLCJhY3QiOnsic3ViIjoiYWdlbnQtMSIsImlzcyI6Imh0dHBzOi8vYWdlbnRzLmV4YW1wbGUifSwiY2xpZW50X2lkIjoiYWdlbnQtMSIsImF1ZCI6Imh0dHBzOi8vYXBpLmdpdGh1Yi5jb20iLCJzY29wZSI6InJlcG8ucmVhZDphY21lLyoqIiwidGFza19pZCI6InRza18wMTIzNDU2Nzg5YWJjZGVmIiwianRpIjoiMDEyMzQ1Njc4OWFiY2RlZiIsImlhdCI6MTcwMDAwMDAwMCwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAzMDB9.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"},"action":{"name":"repo.read"},"resource":{"type":"repository","id":"acme/api","properties":{"path":"src/main.go"}},"context":{"tool":"git","dataset":""}}`)

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		var v body
		if err := Decode(benchBody, &v); err != nil {
			b.Fatal(err)
		}
	}
}
