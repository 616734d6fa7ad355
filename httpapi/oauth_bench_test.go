package httpapi

import (
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOAuthExchangeVsREST measures one token of an approved task by
// the REST mint and by the RFC 8693 exchange (bearer header, and client
// assertion), reporting the process's CPU µs per token (server, test
// client and PostgreSQL driver alike; PostgreSQL's own CPU not counted):
// what the front door costs over the REST API.
func BenchmarkOAuthExchangeVsREST(b *testing.B) {
	e := newEnv(b)
	e.bench = true
	id := e.approved("agent-1", "alice", readAcme)
	tok := e.agent("agent-1")
	post := func(bearer string, v url.Values) int {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := e.srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	exchange := url.Values{
		"grant_type": {grantTokenExchange}, "subject_token": {tok}, "subject_token_type": {tokenTypeIDToken},
		"authorization_details": {details(id)}, "scope": {"github.repo.read:acme/api"}, "resource": {apiGitHub},
	}
	cases := []struct {
		name string
		do   func() bool
	}{
		{"rest", func() bool {
			return e.do("POST", "/v1/tasks/"+id+"/tokens", tok, map[string]any{
				"scopes": []string{"github.repo.read:acme/api"}, "audience": apiGitHub}).Status == http.StatusCreated
		}},
		{"exchange-bearer", func() bool { return post(tok, exchange) == http.StatusOK }},
		{"exchange-assertion", func() bool { return post("", asClient(tok, exchange)) == http.StatusOK }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			start := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				if !c.do() {
					b.Fatal("not minted")
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/token")
		})
	}
}
