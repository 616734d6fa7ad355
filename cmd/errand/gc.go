package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Errand's live heap is small (tens of MiB: keys, caches, connections),
// and every request allocates; at Go's default GOGC=100 the collector
// then runs every few MiB and took a tenth of the CPU of a mint or a
// decision. At 400 it costs 12–15 % less CPU per operation for ~15 MiB
// more RSS (docs/benchmarks.md). A soft memory limit keeps the larger
// headroom from growing with a large live heap: near it, the collector
// runs as often as it must.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 1 << 30 // when no cgroup limit is found
)

// tuneGC applies those defaults unless GOGC or GOMEMLIMIT, Go's own
// settings, are set, and logs what runs.
func tuneGC(log *slog.Logger) {
	gc, limit := os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT")
	if gc == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if limit == "" {
		debug.SetMemoryLimit(memoryLimit(readFile("/sys/fs/cgroup/memory.max")))
	}
	cur := debug.SetGCPercent(-1)
	debug.SetGCPercent(cur)
	log.Info("garbage collector", "gc_percent", cur, "memory_limit_bytes", debug.SetMemoryLimit(-1),
		"from_env", gc != "" || limit != "")
}

// memoryLimit is three quarters of a cgroup (v2) memory.max, or the
// default when there is none.
func memoryLimit(cgroupMax string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(cgroupMax), 10, 64)
	if err != nil || n <= 0 {
		return defaultMemoryLimit
	}
	return n / 4 * 3
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
