package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	gojwt "github.com/golang-jwt/jwt/v5"
)

// rotateScenario mints on every worker while `errand keys rotate --force`
// runs o.rounds times, evenly over the run (forced: a run is shorter than
// the 5.5 min a next key is published before it may sign; the JWKS checked
// here is fetched after each mint, so no cache is involved). After each mint the worker fetches
// the JWKS Errand serves at that moment and verifies the token with it:
// a request refused or a token that does not verify is a failure.
func (b *bench) rotateScenario(o options) (Report, error) {
	var (
		lat                  []time.Duration
		mu                   sync.Mutex
		errs, unverified     atomic.Int64
		first                atomic.Value
		kidsSeen             sync.Map
		rotations, rotateErr atomic.Int64
		wg                   sync.WaitGroup
	)
	cutoff := time.Now().Add(o.duration)
	// The rotations.
	wg.Add(1)
	go func() {
		defer wg.Done()
		every := o.duration / time.Duration(o.rounds+1)
		for r := 0; r < o.rounds; r++ {
			time.Sleep(every)
			out, err := exec.Command(b.errandBin, "keys", "rotate", "--force", "--yes", "--config", b.cfgPath).CombinedOutput()
			if err != nil {
				rotateErr.Add(1)
				first.CompareAndSwap(nil, fmt.Sprintf("keys rotate: %v: %s", err, out))
				continue
			}
			rotations.Add(1)
		}
	}()
	before := cpuSnapshot(b.cmd.Process.Pid)
	start := time.Now()
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := w % len(b.tasks)
			var mine []time.Duration
			for time.Now().Before(cutoff) {
				t0 := time.Now()
				var out struct {
					AccessToken string `json:"access_token"`
				}
				if err := b.call("POST", "/v1/tasks/"+b.tasks[k]+"/tokens", b.agents[k], mintBody, 201, &out); err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, time.Since(t0))
				kid, err := b.verifyWithServedJWKS(out.AccessToken)
				if err != nil {
					unverified.Add(1)
					first.CompareAndSwap(nil, "verify: "+err.Error())
					continue
				}
				kidsSeen.Store(kid, true)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	after := cpuSnapshot(b.cmd.Process.Pid)
	f, _ := first.Load().(string)
	rep := summarize("rotate", o.concurrency, elapsed, lat, errs.Load()+unverified.Load()+rotateErr.Load(), f)
	rep.Ops = int64(len(lat))
	rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	if rep.Ops > 0 {
		rep.ErrandCPUus = (after.errand - before.errand).Seconds() * 1e6 / float64(rep.Ops)
		rep.PostgresCPUus = (after.postgres - before.postgres).Seconds() * 1e6 / float64(rep.Ops)
		rep.TotalCPUus = rep.ErrandCPUus + rep.PostgresCPUus
	}
	kids := 0
	kidsSeen.Range(func(any, any) bool { kids++; return true })
	fmt.Printf("rotations %d (failed %d); mints refused %d; tokens not verifying against the JWKS served then %d; signing keys seen %d\n",
		rotations.Load(), rotateErr.Load(), errs.Load(), unverified.Load(), kids)
	if rotations.Load() < int64(o.rounds) {
		return rep, fmt.Errorf("not every rotation ran: %s", f)
	}
	return rep, nil
}

// verifyWithServedJWKS fetches the JWKS now and verifies tok with it.
func (b *bench) verifyWithServedJWKS(tok string) (string, error) {
	res, err := b.client.Get(b.base + "/.well-known/jwks.json")
	if err != nil {
		return "", err
	}
	raw, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("jwks: %d %v", res.StatusCode, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return "", err
	}
	var kid string
	_, err = gojwt.Parse(tok, func(t *gojwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		keys := set.Key(kid)
		if len(keys) == 0 {
			return nil, fmt.Errorf("kid %q is not in the JWKS served", kid)
		}
		return keys[0].Key, nil
	}, gojwt.WithValidMethods([]string{"EdDSA", "ES256"}))
	return kid, err
}
