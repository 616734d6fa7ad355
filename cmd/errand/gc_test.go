package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"":             defaultMemoryLimit,
		"max\n":        defaultMemoryLimit,
		"536870912\n":  402653184,
		"0":            defaultMemoryLimit,
		"garbage":      defaultMemoryLimit,
		"4294967296\n": 3221225472,
	} {
		if got := memoryLimit(in); got != want {
			t.Errorf("memoryLimit(%q) = %d, want %d", in, got, want)
		}
	}
}
