package broker

import (
	"encoding/json"
	"testing"
	"time"
)

// TestChainHashIsPinned pins the chain's hash for a fixed event: every
// stored chain and every verifier depends on these bytes not moving.
func TestChainHashIsPinned(t *testing.T) {
	e := AuditEvent{
		Seq:    42,
		Time:   time.Date(2026, 11, 30, 7, 30, 0, 123456000, time.UTC),
		Type:   "credential.issued",
		Actor:  Actor{Kind: "agent", Issuer: "https://idp.example", Subject: "agent-1"},
		TaskID: "tsk_abc",
		Detail: json.RawMessage(`{"jti":"j1","scopes":["read:docs"],"aud":"https://api.example"}`),
	}
	const want = "b0f404ab58df3b8c421fe0a19f2af64897ea1afbfed8f812268a635db329d439"
	if got := ChainHash(GenesisHash, e); got != hashByMarshal(GenesisHash, e) {
		t.Fatalf("direct encoding %s differs from Marshal's %s", got, hashByMarshal(GenesisHash, e))
	} else if got != want {
		t.Fatalf("ChainHash = %s, want the pinned %s", got, want)
	}
}

func hashByMarshal(prev string, e AuditEvent) string {
	detail := []byte(e.Detail)
	if len(detail) == 0 {
		detail = []byte("{}")
	}
	return hashOf(prev, marshalCanon(e, detail))
}

// FuzzChainHash holds the direct encoding to Marshal's bytes for any
// strings and any valid detail, including the ones it must hand back.
func FuzzChainHash(f *testing.F) {
	f.Add(int64(1), int64(1764487800123456789), "credential.issued", "agent", "https://idp", "a<b", "tsk_1", `{"a":[1,2,{"b":"c d"}]}`)
	f.Add(int64(-7), int64(0), "t", "system", "", "", "", `{}`)
	f.Add(int64(3), int64(5), "é", "k\u2028", "i\x00", `s"\`, "t&", "{\"a\" : \"<\\u003c\"}")
	f.Add(int64(9), int64(9), "t", "user", "i", "s", "x", `"\u2028 \ud800"`)
	f.Add(int64(9), int64(9), "t", "user", "i", "s", "x", "[\"\xff\",\"\\\"\",true,null,-1.5e3]")
	f.Fuzz(func(t *testing.T, seq, nanos int64, typ, kind, iss, sub, task, detail string) {
		if !json.Valid([]byte(detail)) {
			t.Skip()
		}
		e := AuditEvent{Seq: seq, Time: time.Unix(0, nanos), Type: typ,
			Actor: Actor{Kind: kind, Issuer: iss, Subject: sub}, TaskID: task, Detail: json.RawMessage(detail)}
		d := []byte(detail)
		if len(d) == 0 {
			d = []byte("{}")
		}
		want := marshalCanon(e, d)
		if got, ok := appendPlainCanon(nil, e, d); ok && string(got) != string(want) {
			t.Fatalf("direct encoding\n%s\nMarshal\n%s", got, want)
		}
		if got := ChainHash("p", e); got != hashOf("p", want) {
			t.Fatalf("ChainHash differs from the hash of Marshal's bytes")
		}
	})
}

func BenchmarkChainHash(b *testing.B) {
	e := AuditEvent{
		Seq: 1, Time: time.Now(), Type: "credential.issued",
		Actor:  Actor{Kind: "agent", Issuer: "https://idp.example", Subject: "agent-1"},
		TaskID: "tsk_abc",
		Detail: json.RawMessage(`{"jti":"01JDXR6W3E4Z9S7Q2V5K8M1N0P","kind":"jwt","scopes":["read:docs"],"audience":"https://api.example","expires_at":"2026-11-30T07:35:00Z"}`),
	}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ChainHash(GenesisHash, e)
		}
	})
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			hashByMarshal(GenesisHash, e)
		}
	})
}
