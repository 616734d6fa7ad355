package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/version"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	issued   prometheus.Counter
	refusals *prometheus.CounterVec
	// decisions counts AuthZEN decisions by outcome.
	decisions *prometheus.CounterVec
	// approval is how long a user took to decide, by what was decided
	// (a task or a step-up) and the decision.
	approval *prometheus.HistogramVec
}

// decided records a user's decision on what was asked for at created.
func (m *metrics) decided(kind string, approved bool, created time.Time) {
	d := "denied"
	if approved {
		d = "approved"
	}
	m.approval.WithLabelValues(kind, d).Observe(max(time.Since(created), 0).Seconds())
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
		approval: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "errand_approval_seconds", Help: "Time from a task's or a step-up's request to its user's decision.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 8 * 3600, 24 * 3600},
		}, []string{"kind", "decision"}),
	}
	for _, k := range []string{"task", "step_up"} {
		for _, d := range []string{"approved", "denied"} {
			m.approval.WithLabelValues(k, d)
		}
	}
	v := version.Get()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "errand_build_info", Help: "Always 1; the labels name the running build.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(v.Version, v.Commit, v.GoVersion).Set(1)
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.issued, m.refusals, m.decisions, m.approval, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// instrument records every request's route, status and latency, and logs it.
// instrument records every request's route, status and latency, and logs
// one line for it: request id (also answered in X-Request-Id), principal,
// task, status, refusal code, duration. Never a token, a body, or a query.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{id: requestID(r)}
		w.Header().Set("X-Request-Id", ri.id)
		r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		rc := chi.RouteContext(r.Context())
		if rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())
		ri.mu.Lock()
		task := ri.task
		if task == "" && rc != nil {
			task = broker.AuditTaskID(rc.URLParam("id"))
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("request_id", ri.id), slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", status), slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.String("principal", ri.principal), slog.String("task_id", task), slog.String("code", ri.code))
		ri.mu.Unlock()
	})
}
