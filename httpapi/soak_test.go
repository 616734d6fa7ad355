package httpapi

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/internal/testing/testvault"
	"github.com/errandhq/errand/revocation"
)

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// statusLog collects the answers of concurrent requests that a test does
// not accept, so that worker goroutines never call t.Fatal.
type statusLog struct {
	mu  sync.Mutex
	bad []string
}

func (l *statusLog) add(what string, r resp) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) < 20 {
		l.bad = append(l.bad, fmt.Sprintf("%s: %d %s", what, r.Status, r.Raw))
	}
}

func (l *statusLog) check(t *testing.T) {
	t.Helper()
	if len(l.bad) > 0 {
		t.Fatalf("unexpected answers:\n%v", l.bad)
	}
}

// TestF09LoadAgainstPostgresAndVault (F09, in CI's size): mints at 100 in
// parallel, introspections of every minted token at 100 in parallel, and
// Vault secrets, against PostgreSQL and a real Vault. No answer is a 5xx,
// every token returned is recorded once, and closing the tasks leaves no
// token active and no Vault login alive. Latencies are logged, not
// asserted: docs/benchmarks.md has the full run (ERRAND_F09_MINTS=10000,
// without -race) and its figures.
func TestF09LoadAgainstPostgresAndVault(t *testing.T) {
	v := testvault.Shared(t)
	e := newEnvWith(t, envOptions{vault: v})
	ctx := context.Background()
	const tasks, parallel = 20, 100
	mints := envInt("ERRAND_F09_MINTS", 2000)
	ids := make([]string, tasks)
	for i := range ids {
		ids[i] = e.approved(fmt.Sprintf("f09-agent-%d", i), "alice", "github.repo.read:acme/**", "db.orders.read:database/creds/**")
	}
	toks := make([]string, tasks)
	for i := range toks {
		toks[i] = e.agent(fmt.Sprintf("f09-agent-%d", i))
	}
	var (
		bad   statusLog
		mu    sync.Mutex
		lat   []time.Duration
		out   []string
		jtis  = map[string]bool{}
		users []string
	)
	body := map[string]any{"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}
	run := func(n, par int, fn func(i int)) {
		var wg sync.WaitGroup
		next := make(chan int)
		for w := 0; w < par; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					fn(i)
				}
			}()
		}
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	start := time.Now()
	run(mints, parallel, func(i int) {
		t0 := time.Now()
		r := e.do("POST", "/v1/tasks/"+ids[i%tasks]+"/tokens", toks[i%tasks], body)
		d := time.Since(t0)
		if r.Status != http.StatusCreated {
			bad.add("mint", r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		lat, out = append(lat, d), append(out, r.str("access_token"))
		jtis[r.str("jti")] = true
	})
	mintWall := time.Since(start)
	bad.check(t)
	if len(jtis) != mints || len(out) != mints {
		t.Fatalf("%d distinct jtis for %d mints", len(jtis), mints)
	}
	var recorded int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM credentials WHERE task_id = ANY($1) AND kind = 'jwt'`, ids).Scan(&recorded); err != nil || recorded != mints {
		t.Fatalf("%d tokens recorded for %d returned (%v)", recorded, mints, err)
	}
	rs := e.resource("f09-rs")
	start = time.Now()
	run(len(out), parallel, func(i int) {
		if r := e.introspect(rs, out[i]); r.Status != http.StatusOK || r.JSON["active"] != true {
			bad.add("introspect", r)
		}
	})
	introWall := time.Since(start)
	run(2*tasks, 20, func(i int) {
		r := e.secret(fmt.Sprintf("f09-agent-%d", i%tasks), ids[i%tasks], "task-ro")
		if r.Status != http.StatusCreated {
			bad.add("secret", r)
			return
		}
		mu.Lock()
		users = append(users, r.JSON["data"].(map[string]any)["username"].(string))
		mu.Unlock()
	})
	bad.check(t)
	slices.Sort(lat)
	t.Logf("%d mints at %d in parallel in %v (%.0f/s), p50 %v, p99 %v; %d introspections in %v (%.0f/s)",
		mints, parallel, mintWall, float64(mints)/mintWall.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100],
		len(out), introWall, float64(len(out))/introWall.Seconds())

	for i, id := range ids {
		if r := e.do("POST", "/v1/tasks/"+id+"/close", toks[i], nil); r.Status != http.StatusOK {
			t.Fatalf("close: %d %s", r.Status, r.Raw)
		}
	}
	// The outbox confirms every task token's revocation (Drain takes ten
	// due items a call).
	for ob, settle := e.outbox(), time.Now().Add(30*time.Second); ; {
		if _, err := ob.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		var pending int
		if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM outbox WHERE task_id = ANY($1) AND done_at IS NULL`, ids).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			break
		}
		if time.Now().After(settle) {
			t.Fatalf("%d backend revocations still pending 30 s after close", pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, i := range []int{0, len(out) / 2, len(out) - 1} {
		if r := e.introspect(rs, out[i]); r.JSON["active"] != false {
			t.Fatalf("a token of a closed task is active: %s", r.Raw)
		}
	}
	var live int
	if err := e.st.Pool().QueryRow(ctx, `SELECT count(*) FROM credentials WHERE task_id = ANY($1) AND revoked_at IS NULL`, ids).Scan(&live); err != nil || live != 0 {
		t.Fatalf("%d credentials of closed tasks unrevoked (%v)", live, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range users {
		for roleExists(t, v, u) {
			if time.Now().After(deadline) {
				t.Fatalf("the Vault login %s outlived its closed task", u)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestF10SoakWithFaults (F10, in miniature; ERRAND_SOAK_SECONDS runs it
// longer): agents create, approve, mint, read secrets, close or let their
// short tasks expire, while PostgreSQL and Vault connections are cut and
// the background workers restarted at random. No answer is a 401 or a
// 500 because of an outage (an outage is a 503 with Retry-After); when it
// is over, no credential of an ended task is live, in Errand or in Vault,
// no revocation is left undone, the audit chain verifies and counts every
// issue and revocation, and no goroutine leaked.
func TestF10SoakWithFaults(t *testing.T) {
	v := testvault.Shared(t)
	ctx := context.Background()
	pgProxy, dbURL := testpg.NewProxy(t, testpg.URL(t))
	vaultProxy, vaultURL := testpg.NewProxy(t, v.Addr)
	e := newEnvWith(t, envOptions{vault: v, dbURL: dbURL, vaultAddr: vaultURL})
	soak := time.Duration(envInt("ERRAND_SOAK_SECONDS", 12)) * time.Second
	goroutines := runtime.NumGoroutine()

	// The background workers, restarted by the faults.
	var (
		wmu     sync.Mutex
		stopW   context.CancelFunc
		workers sync.WaitGroup
	)
	startWorkers := func() {
		wctx, cancel := context.WithCancel(ctx)
		sw := &revocation.Sweeper{Service: e.svc, Interval: 200 * time.Millisecond, Logger: logger(nil)}
		ob := e.outbox()
		// A worker restarted mid-attempt leaves its item claimed until the
		// lease runs out, as a crashed replica would: keep it short here.
		ob.Poll, ob.Lease, ob.Logger = 200*time.Millisecond, 2*time.Second, logger(nil)
		workers.Add(2)
		go func() { defer workers.Done(); _ = sw.Run(wctx) }()
		go func() { defer workers.Done(); _ = ob.Run(wctx) }()
		wmu.Lock()
		stopW = cancel
		wmu.Unlock()
	}
	restartWorkers := func() {
		wmu.Lock()
		stop := stopW
		wmu.Unlock()
		stop()
		workers.Wait()
		startWorkers()
	}
	startWorkers()

	var (
		bad     statusLog
		idsMu   sync.Mutex
		ids     []string
		outages int
	)
	// Answers an outage may give: a 503 with Retry-After. A task whose
	// short life ended between two steps answers 409.
	accept := func(what string, r resp, ok ...int) bool {
		switch {
		case slices.Contains(ok, r.Status):
			return true
		case r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "":
		case r.Status == http.StatusConflict && r.str("code") == "task_not_active":
		default:
			bad.add(what, r)
		}
		return false
	}
	done := make(chan struct{})
	var faults sync.WaitGroup
	faults.Add(1)
	go func() {
		defer faults.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(800+rng.IntN(700)) * time.Millisecond):
			}
			switch rng.IntN(3) {
			case 0:
				pgProxy.Cut()
				time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
				pgProxy.Restore()
			case 1:
				vaultProxy.Cut()
				time.Sleep(time.Duration(200+rng.IntN(500)) * time.Millisecond)
				vaultProxy.Restore()
			default:
				restartWorkers()
			}
			outages++
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			agent := fmt.Sprintf("f10-agent-%d", w)
			for end := time.Now().Add(soak); time.Now().Before(end); {
				r := e.do("POST", "/v1/tasks", e.agent(agent), map[string]any{
					"on_behalf_of": "alice", "goal": "soak", "audiences": []string{apiGitHub},
					"scopes":      []string{"github.repo.read:acme/**", "db.orders.read:database/creds/**"},
					"ttl_seconds": 2 + rng.IntN(4),
				})
				if !accept("create", r, http.StatusCreated) {
					continue
				}
				id := r.str("id")
				idsMu.Lock()
				ids = append(ids, id)
				idsMu.Unlock()
				if !accept("approve", e.do("POST", "/v1/tasks/"+id+"/approve", e.user("alice", "eng"), map[string]any{}), http.StatusOK) {
					continue
				}
				for i := rng.IntN(3); i >= 0; i-- {
					accept("mint", e.mint(agent, id, "github.repo.read:acme/api"), http.StatusCreated)
				}
				if rng.IntN(3) == 0 {
					accept("secret", e.secret(agent, id, "task-ro"), http.StatusCreated)
				}
				if rng.IntN(3) > 0 { // else it expires on its own
					accept("close", e.do("POST", "/v1/tasks/"+id+"/close", e.agent(agent), nil), http.StatusOK)
				}
			}
		}(w)
	}
	wg.Wait()
	close(done)
	faults.Wait()
	pgProxy.Restore()
	vaultProxy.Restore()
	bad.check(t)
	t.Logf("%d tasks through %d faults in %v", len(ids), outages, soak)
	if len(ids) == 0 || outages == 0 {
		t.Fatal("the soak ran no task or no fault")
	}

	// Let every task end, then let the workers finish their work.
	time.Sleep(6 * time.Second)
	for _, id := range ids {
		if r := e.do("POST", "/v1/tasks/"+id+"/close", e.agent("f10-agent-0"), nil); r.Status >= 500 {
			t.Fatalf("close after the soak: %d %s", r.Status, r.Raw)
		}
	}
	settle := time.Now().Add(30 * time.Second)
	for {
		var live, pending int
		if err := e.st.Pool().QueryRow(ctx, `SELECT
			(SELECT count(*) FROM credentials WHERE task_id = ANY($1) AND revoked_at IS NULL),
			(SELECT count(*) FROM outbox WHERE task_id = ANY($1) AND done_at IS NULL)`, ids).Scan(&live, &pending); err != nil {
			t.Fatal(err)
		}
		if live == 0 && pending == 0 {
			break
		}
		if time.Now().After(settle) {
			t.Fatalf("after the soak: %d credentials of ended tasks live, %d backend revocations pending", live, pending)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wmu.Lock()
	stopW()
	wmu.Unlock()
	workers.Wait()

	// Vault against the database: no task token of these tasks lives on.
	vt, err := e.vault.TaskTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range vt {
		if slices.Contains(ids, tok.TaskID) {
			t.Fatalf("Vault still holds task %s's token after the task ended", tok.TaskID)
		}
	}
	// The audit chain verifies, and counts what the tables hold.
	cv := broker.NewChainVerifier()
	for after := int64(0); ; {
		evs, err := e.st.AuditEvents(ctx, broker.HistoryFilter{AfterSeq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if err := cv.Add(ev); err != nil {
				t.Fatal(err)
			}
			after = ev.Seq
		}
		if len(evs) < 1000 {
			break
		}
	}
	seq, head, err := e.st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cv.Finish(seq, head); err != nil {
		t.Fatal(err)
	}
	var creds, issued, revoked int
	if err := e.st.Pool().QueryRow(ctx, `SELECT
		(SELECT count(*) FROM credentials WHERE task_id = ANY($1)),
		(SELECT count(*) FROM audit_events WHERE task_id = ANY($1) AND type = 'credential.issued'),
		(SELECT count(*) FROM audit_events WHERE task_id = ANY($1) AND type = 'credential.revoked')`, ids).Scan(&creds, &issued, &revoked); err != nil {
		t.Fatal(err)
	}
	if issued != creds || revoked < 1 {
		t.Fatalf("%d credentials, %d credential.issued events, %d credential.revoked events", creds, issued, revoked)
	}
	// No goroutine leaked (idle HTTP connections may linger a moment).
	leak := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines+40 {
		if time.Now().After(leak) {
			t.Fatalf("%d goroutines after the soak, %d before", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
