package httpapi

import "testing"

// FuzzCursor: cursors are opaque and bound; nothing but a cursor this
// server made for this very query and caller is accepted.
func FuzzCursor(f *testing.F) {
	s := &Server{curKey: []byte("cursor-key-for-fuzzing-0123456789")}
	good := s.cursor(42, "events|a")
	f.Add(good, "events|a")
	f.Add(good, "events|b")
	f.Add("AAAAAAAAACo", "events|a")
	f.Fuzz(func(t *testing.T, c, scope string) {
		seq, err := s.parseCursor(c, scope)
		if err != nil || c == "" {
			return
		}
		if s.cursor(seq, scope) != c {
			t.Fatalf("accepted a cursor this server did not make: %q for %q", c, scope)
		}
	})
}
