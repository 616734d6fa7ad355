package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	issued   prometheus.Counter
	refusals *prometheus.CounterVec
	// decisions counts AuthZEN decisions by outcome.
	decisions *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "errand_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "errand_credentials_issued_total", Help: "Credentials issued (recorded and returned).",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_refusals_total", Help: "Refused requests by code.",
		}, []string{"code"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_authzen_decisions_total", Help: "AuthZEN access evaluations by decision.",
		}, []string{"decision"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.issued, m.refusals, m.decisions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// instrument records every request's route, status and latency, and logs it.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())
		s.log.DebugContext(r.Context(), "request", "method", r.Method, "route", route,
			"status", status, "duration_ms", float64(d.Microseconds())/1000)
	})
}
