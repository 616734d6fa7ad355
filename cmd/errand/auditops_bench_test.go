package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/postgres"
)

const benchTasks = 1_000

// benchEvents is 1,000,000, or ERRAND_BENCH_EVENTS (CI's smoke run of the
// benchmarks uses fewer).
var benchEvents = func() int {
	if n, err := strconv.Atoi(os.Getenv("ERRAND_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}()

var (
	benchOnce  sync.Once
	benchStore *postgres.Store
	benchStart time.Time
)

// millionEvents builds, once per run, a database with 1,000,000 chained
// audit events over 1,000 tasks, one event a second.
func millionEvents(b *testing.B) *postgres.Store {
	benchOnce.Do(func() {
		u := testpg.NewPackageDatabase(b)
		st, err := postgres.Open(context.Background(), postgres.Config{URL: u})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Migrate(context.Background()); err != nil {
			b.Fatal(err)
		}
		benchStart = time.Now().UTC().Add(-time.Duration(benchEvents) * time.Second).Truncate(time.Second)
		prev := broker.GenesisHash
		rows := make([][]any, 0, benchEvents)
		for i := 1; i <= benchEvents; i++ {
			e := broker.AuditEvent{Seq: int64(i), Time: benchStart.Add(time.Duration(i) * time.Second), Type: broker.EventCredentialIssued,
				Actor:  broker.Actor{Kind: "agent", Issuer: "https://agents", Subject: fmt.Sprintf("agent-%d", i%50)},
				TaskID: fmt.Sprintf("tsk_%026d", i%benchTasks), Detail: []byte(`{"kind":"jwt","scopes":["github.repo.read:acme/api"]}`),
				HashScheme: broker.HashSchemeCurrent}
			e.Hash = broker.ChainHash(prev, e)
			prev = e.Hash
			rows = append(rows, []any{e.Seq, e.Time, e.Type, e.Actor.Kind, e.Actor.Issuer, e.Actor.Subject, e.TaskID, string(e.Detail), e.Hash, e.HashScheme})
		}
		ctx := context.Background()
		if _, err := st.Pool().CopyFrom(ctx, pgx.Identifier{"audit_events"},
			[]string{"seq", "time", "type", "actor_kind", "actor_iss", "actor_sub", "task_id", "detail", "hash", "hash_scheme"}, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		if _, err := st.Pool().Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2`, benchEvents, prev); err != nil {
			b.Fatal(err)
		}
		if _, err := st.Pool().Exec(ctx, `ANALYZE audit_events`); err != nil {
			b.Fatal(err)
		}
		benchStore = st
	})
	return benchStore
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkAuditQueryTaskID: one page (100) of a task's events out of 1 M.
//
//	ERRAND_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//	  go test ./cmd/errand -run '^$' -bench AuditQuery -benchtime 2000x
//	  go test ./cmd/errand -run '^$' -bench AuditVerify -benchtime 2x
func BenchmarkAuditQueryTaskID(b *testing.B) {
	st := millionEvents(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		evs, err := st.AuditEvents(context.Background(), broker.HistoryFilter{TaskID: fmt.Sprintf("tsk_%026d", rand.IntN(benchTasks)), Limit: 100})
		if err != nil || len(evs) != min(101, benchEvents/benchTasks) {
			b.Fatalf("%d events, %v", len(evs), err)
		}
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// BenchmarkAuditQueryTimeRange: one page (100) of a random hour out of 1 M.
func BenchmarkAuditQueryTimeRange(b *testing.B) {
	st := millionEvents(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		since := benchStart.Add(time.Duration(rand.IntN(benchEvents-3600)) * time.Second)
		start := time.Now()
		evs, err := st.AuditEvents(context.Background(), broker.HistoryFilter{Since: since, Until: since.Add(time.Hour), Limit: 100})
		if err != nil || len(evs) != 101 {
			b.Fatalf("%d events, %v", len(evs), err)
		}
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// BenchmarkAuditVerify walks the whole chain of 1 M events.
func BenchmarkAuditVerify(b *testing.B) {
	st := millionEvents(b)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		n, _, _, err := verifyChain(context.Background(), st)
		if err != nil || n != int64(benchEvents) {
			b.Fatalf("verified %d: %v", n, err)
		}
	}
	b.ReportMetric(float64(benchEvents*b.N)/time.Since(start).Seconds(), "events/s")
}
