package resource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/errandhq/errand/internal/testing/errandtest"
)

// BenchmarkVerifyOffline is the cost of one request's check with the feed
// current, no I/O: VerifyFirstSight a token never seen (header, JWKS key
// from memory, EdDSA signature, claims, scopes, revocation set), Verify
// and Require a token seen before (its hash, expiry, revocation set).
func BenchmarkVerifyOffline(b *testing.B) {
	e := errandtest.Start(b, errandtest.Options{})
	v := newVerifier(b, e, nil)
	ready(b, v)
	task := approvedTask(b, e, "github.repo.read:acme/**")
	tok := mint(b, e, task, 300, nil, "github.repo.read:acme/api")
	req := httptest.NewRequest("GET", "https://api.example.test/repo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	ctx := context.Background()
	if _, err := v.Verify(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.Run("VerifyFirstSight", func(b *testing.B) {
		v.noCache = true
		defer func() { v.noCache = false }()
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if _, err := v.Verify(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if _, err := v.Verify(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
	b.Run("Require", func(b *testing.B) {
		h := v.Require("github.repo.read", "acme/api")(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		w := httptest.NewRecorder()
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
		reportCPU(b, cpu)
	})
}

// cpuTime is the process's CPU time (user and system). On a shared
// machine it is the steadier figure: wall time per operation grows with
// the other processes' load, CPU time per operation does not. It counts
// the process's other goroutines too (the feed's idle stream, Errand's
// idle workers), so it is an upper bound.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e3, "cpu-µs/op")
}
