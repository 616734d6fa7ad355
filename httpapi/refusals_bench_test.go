package httpapi

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkH03MintUnderAnonymousFlood measures an authenticated agent's
// mint latency (p50, p99, over HTTP on loopback, one mint at a time) with
// no other traffic, and while unidentified callers send junk tokens at a
// fixed rate: 200/s is what one source gets through the default per-address
// limit, 1000/s five such sources. Each junk token carries a duplicated
// 5,000-byte claim name, as in the H03 report. It also reports the audit
// rows the junk added (junk-rows) and the junk rate reached.
//
//	ERRAND_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//	  go test ./httpapi -run '^$' -bench H03MintUnderAnonymousFlood -benchtime 400x -count 3
func BenchmarkH03MintUnderAnonymousFlood(b *testing.B) {
	for _, rate := range []int{0, 200, 1000} {
		b.Run(fmt.Sprintf("junk=%d/s", rate), func(b *testing.B) {
			e := newEnv(b)
			e.bench = true
			id := e.approved("agent-1", "alice", "github.repo.read:acme/**")
			tok := e.agent("agent-1")
			body := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
			e.mustStatus(e.do("POST", "/v1/tasks/"+id+"/tokens", tok, body), http.StatusCreated) // warm
			before := e.snapshot()

			stop := make(chan struct{})
			var sent, wrong atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			const workers = 4
			for w := 0; rate > 0 && w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					floodAt(e.srv.URL, rate/workers, floodToken(), stop, &sent, &wrong)
				}()
			}
			var lat latencies
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if r := e.do("POST", "/v1/tasks/"+id+"/tokens", tok, body); r.Status != http.StatusCreated {
					b.Fatalf("mint: %d %s", r.Status, r.Raw)
				}
				lat.add(time.Since(t0))
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			elapsed := time.Since(start)
			if wrong.Load() > 0 {
				b.Fatalf("%d junk requests were not answered 401", wrong.Load())
			}
			lat.report(b, "mint")
			b.ReportMetric(float64(sent.Load())/elapsed.Seconds(), "junk/s")
			b.ReportMetric(float64(e.snapshot().auditSeq-before.auditSeq-int64(b.N)), "junk-rows")
		})
	}
}

// floodToken is an unsigned token whose payload repeats a 5,000-byte
// claim name.
func floodToken() string {
	key := strings.Repeat("K", 5000)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc([]byte(`{"iss":"https://idp.invalid","`+key+`":1,"`+key+`":2}`)) + "." + enc([]byte("sig"))
}

// floodAt sends POST /v1/tasks with tok, perSecond times a second, until
// stop is closed; answers other than 401 are counted in wrong.
func floodAt(base string, perSecond int, tok string, stop <-chan struct{}, sent, wrong *atomic.Int64) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		req, _ := http.NewRequest("POST", base+"/v1/tasks", strings.NewReader(`{"goal":"g"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			wrong.Add(1)
			continue
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		sent.Add(1)
		if res.StatusCode != http.StatusUnauthorized {
			wrong.Add(1)
		}
	}
}
