package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
)

// TestChainHashIsPinned pins the chain's hash for a fixed event under the
// old scheme: every chain stored before JCS and every verifier of it
// depends on these bytes not moving.
func TestChainHashIsPinned(t *testing.T) {
	e := AuditEvent{
		HashScheme: HashSchemeGoJSON,
		Seq:        42,
		Time:       time.Date(2026, 11, 30, 7, 30, 0, 123456000, time.UTC),
		Type:       "credential.issued",
		Actor:      Actor{Kind: "agent", Issuer: "https://idp.example", Subject: "agent-1"},
		TaskID:     "tsk_abc",
		Detail:     json.RawMessage(`{"jti":"j1","scopes":["read:docs"],"aud":"https://api.example"}`),
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
		e := AuditEvent{Seq: seq, Time: time.Unix(0, nanos), Type: typ, HashScheme: HashSchemeGoJSON,
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

// TestChainHashJCSIsPinned pins the JCS scheme's bytes and hash for an
// event with non-ASCII and escaped strings, numbers and nested detail, as
// docs/audit-chain.md shows them: the canonical text is written out here,
// so a change of the form cannot pass by changing both sides.
func TestChainHashJCSIsPinned(t *testing.T) {
	e := AuditEvent{
		Seq: 7, Time: time.Date(2026, 11, 30, 7, 30, 0, 120000000, time.UTC), Type: "credential.issued",
		HashScheme: HashSchemeJCS,
		Actor:      Actor{Kind: "agent", Issuer: "https://idp.example", Subject: "agent-é<1>"},
		TaskID:     "tsk_abc",
		Detail:     json.RawMessage(`{"z":[1.50,1e21,-0,"\u20ac\n"],"a":{"\u00e9":true,"b":null},"\ud83d\ude00":2e-7}`),
	}
	const canon = `{"actor":{"iss":"https://idp.example","kind":"agent","sub":"agent-é<1>"},` +
		`"detail":{"a":{"b":null,"é":true},"z":[1.5,1e+21,0,"€\n"],"😀":2e-7},"hash_scheme":2,"seq":7,` +
		`"task_id":"tsk_abc","time":"2026-11-30T07:30:00.12Z","type":"credential.issued"}`
	got, err := appendJCSCanon(nil, e, e.Detail)
	if err != nil || string(got) != canon {
		t.Fatalf("canonical form\n%s (%v)\nwant\n%s", got, err, canon)
	}
	sum := sha256.Sum256([]byte(GenesisHash + "\n" + canon))
	const want = "d14d8e82c553502b22b9621ff434f0d78af9e8d4899d1c63345c0bb67cda1bbf" // docs/audit-chain.md
	if h := ChainHash(GenesisHash, e); h != hex.EncodeToString(sum[:]) || h != want {
		t.Fatalf("ChainHash = %s, want SHA-256 of the genesis hash, a newline and the canonical form, %s", h, want)
	}
}

// TestChainHashSchemesDiffer: the scheme is part of what is hashed, so
// the same event under the other scheme, or an unknown one, never
// verifies.
func TestChainHashSchemesDiffer(t *testing.T) {
	e := AuditEvent{Seq: 1, Time: time.Unix(1, 0), Type: "t", Actor: Actor{Kind: "system"}, Detail: []byte(`{}`)}
	e.HashScheme = HashSchemeGoJSON
	old := ChainHash(GenesisHash, e)
	e.HashScheme = HashSchemeJCS
	if ChainHash(GenesisHash, e) == old {
		t.Fatal("both schemes hash the event alike")
	}
	e.HashScheme = 0
	if _, err := chainHash(GenesisHash, e); err == nil || !strings.Contains(err.Error(), "unknown hash scheme 0") {
		t.Fatalf("scheme 0: %v", err)
	}
}

// FuzzChainHashJCS holds the directly written JCS form to the library's
// canonicalisation of the same event built as a JSON object by
// encoding/json, for any strings and any valid detail.
func FuzzChainHashJCS(f *testing.F) {
	f.Add(int64(1), int64(1764487800123456789), "credential.issued", "agent", "https://idp", "a<b", "tsk_1", `{"b":[1,2,{"b":"c d"}],"a":1.0}`)
	f.Add(int64(-7), int64(0), "t", "system", "", "", "", `{}`)
	f.Add(int64(3), int64(5), "é\x7f", "k\u2028", "i\x00\x1f\b", `s"\`, "t&", "{\"a\" : \"<\\u003c\"}")
	f.Add(int64(1<<53+1), int64(9), "t", "user", "i", "s\xff", "x", `[1e400]`)
	f.Fuzz(func(t *testing.T, seq, nanos int64, typ, kind, iss, sub, task, detail string) {
		if !json.Valid([]byte(detail)) {
			t.Skip()
		}
		e := AuditEvent{Seq: seq, Time: time.Unix(0, nanos), Type: typ, HashScheme: HashSchemeJCS,
			Actor: Actor{Kind: kind, Issuer: iss, Subject: sub}, TaskID: task, Detail: json.RawMessage(detail)}
		got, gotErr := appendJCSCanon(nil, e, e.Detail)
		obj, err := json.Marshal(map[string]any{"seq": seq, "time": e.Time.UTC().Format(time.RFC3339Nano), "type": typ,
			"actor": e.Actor, "task_id": task, "detail": json.RawMessage(detail), "hash_scheme": HashSchemeJCS})
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := jcs.Transform(obj)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("direct: %v, library: %v", gotErr, wantErr)
		}
		if gotErr == nil && string(got) != string(want) {
			t.Fatalf("direct encoding\n%s\nlibrary\n%s", got, want)
		}
	})
}

// TestChainVerifierSchemesAndAnchors: old-scheme events verify, then
// JCS ones; an event may not go back to the old scheme; an anchor must
// match and be reached.
func TestChainVerifierSchemesAndAnchors(t *testing.T) {
	chain := func(schemes ...int) []AuditEvent {
		prev, evs := GenesisHash, []AuditEvent(nil)
		for i, s := range schemes {
			e := AuditEvent{Seq: int64(i + 1), Time: time.Unix(int64(i), 0), Type: "t", Actor: Actor{Kind: "agent", Subject: "ü"},
				Detail: []byte(`{"n":1}`), HashScheme: s}
			e.Hash = ChainHash(prev, e)
			prev, evs = e.Hash, append(evs, e)
		}
		return evs
	}
	walk := func(evs []AuditEvent, anchors ...Anchor) error {
		v := NewChainVerifier(anchors...)
		for _, e := range evs {
			if err := v.Add(e); err != nil {
				return err
			}
		}
		seq, hash := v.Head()
		return v.Finish(seq, hash)
	}
	mixed := chain(1, 1, 2, 2)
	if err := walk(mixed, Anchor{Seq: 2, Hash: mixed[1].Hash}, Anchor{Seq: 4, Hash: mixed[3].Hash}); err != nil {
		t.Fatalf("old then JCS events: %v", err)
	}
	var ce *ChainError
	if err := walk(chain(2, 1)); !errors.As(err, &ce) || ce.Seq != 2 || !strings.Contains(ce.Reason, "hash scheme 1 after scheme 2") {
		t.Fatalf("downgrade: %v", err)
	}
	if err := walk(mixed, Anchor{Seq: 3, Hash: mixed[2].Hash[:63] + "0"}); !errors.As(err, &ce) || ce.Seq != 3 || !strings.Contains(ce.Reason, "anchor") {
		t.Fatalf("wrong anchor: %v", err)
	}
	if err := walk(mixed, Anchor{Seq: 5, Hash: mixed[3].Hash}); !errors.As(err, &ce) || ce.Seq != 5 || !strings.Contains(ce.Reason, "before the anchor") {
		t.Fatalf("anchor beyond the chain: %v", err)
	}
	bad := chain(2)
	bad[0].Detail = []byte(`{"a":"\ud800"}`)
	if err := walk(bad); !errors.As(err, &ce) || ce.Seq != 1 || !strings.Contains(ce.Reason, "I-JSON") {
		t.Fatalf("lone surrogate in detail: %v", err)
	}
	old := chain(1)
	old[0].Detail = []byte(`{"a":`)
	if err := walk(old); !errors.As(err, &ce) || !strings.Contains(ce.Reason, "not JSON") {
		t.Fatalf("old-scheme event with a broken detail: %v", err)
	}
	for _, s := range []string{"3", "3:abc", "0:" + mixed[0].Hash, "x:" + mixed[0].Hash, "3:" + strings.ToUpper(mixed[0].Hash)} {
		if _, err := ParseAnchor(s); err == nil {
			t.Errorf("ParseAnchor(%q) accepted", s)
		}
	}
	if a, err := ParseAnchor("12:" + mixed[0].Hash); err != nil || a != (Anchor{12, mixed[0].Hash}) {
		t.Errorf("ParseAnchor: %v %v", a, err)
	}
}

// BenchmarkChainHash hashes the event of a mint, its detail made as a mint
// makes it. "jcs" is the hash of every event appended now (the members
// written directly, the detail found already canonical); "jcs-unsorted"
// the same with a detail whose keys are out of order, which the JCS
// library canonicalises; "gojson-direct" and "gojson-marshal" are the old
// scheme's two paths, the first of which was the append path before JCS.
func BenchmarkChainHash(b *testing.B) {
	scopes, err := ParseScopes([]string{"read:docs"})
	if err != nil {
		b.Fatal(err)
	}
	e := issuedEvent(Principal{Kind: KindAgent, Issuer: "https://idp.example", Subject: "agent-1"},
		Credential{ID: "01JDXR6W3E4Z9S7Q2V5K8M1N0P", TaskID: "tsk_abc", Scopes: scopes, Audience: "https://api.example",
			ExpiresAt: time.Date(2026, 11, 30, 7, 35, 0, 0, time.UTC)}, time.Now(), "", "")
	e.Seq = 1
	run := func(name string, e AuditEvent, hash func(string, AuditEvent) string) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				hash(GenesisHash, e)
			}
		})
	}
	e.HashScheme = HashSchemeJCS
	run("jcs", e, ChainHash)
	unsorted := e
	unsorted.Detail = json.RawMessage(`{"jti_sha256":"6b1f0c3a9e","kind":"jwt","scopes":["read:docs"],"audience":"https://api.example","expires_at":"2026-11-30T07:35:00Z","dataset":"","step_up_id":"","tool":""}`)
	run("jcs-unsorted", unsorted, ChainHash)
	e.HashScheme = HashSchemeGoJSON
	run("gojson-direct", e, ChainHash)
	run("gojson-marshal", e, hashByMarshal)
}

// FuzzCanonicalDetail: a detail the fast check takes as canonical is
// exactly what the JCS library makes of it.
func FuzzCanonicalDetail(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[true,null,"x\"y\\"]}`, `{"b":1,"a":2}`, `{"a":1,"a":2}`, `-0`, `0`, `-12`,
		`123456789012345`, `1234567890123456`, `01`, `1.0`, `"\u0041"`, `{"a":{"b":{}}}`, `[1,]`, `{"a" :1}`, `"é"`, `tru`, `nul`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, d string) {
		n, ok := scanCanonical([]byte(d), 0, 0)
		if !ok || n != len(d) {
			return
		}
		want, err := jcs.Transform([]byte(d))
		if err != nil || string(want) != d {
			t.Fatalf("%q taken as canonical; the library makes %q (%v)", d, want, err)
		}
	})
}
