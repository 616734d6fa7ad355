package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/errandhq/errand/broker"
)

// Failures is what the worker tells the broker: a delivery given up is
// marked failed and audited once (broker.Service.RecordDeliveryFailure).
type Failures interface {
	RecordDeliveryFailure(ctx context.Context, d broker.Delivery, cause string) error
}

// Worker delivers queued notifications to their webhooks.
type Worker struct {
	Store    broker.Deliveries
	Failures Failures
	Targets  []Target
	// PublicURL is Errand's, the base of every link.
	PublicURL string
	// Poll is how often each webhook's queue is read; default 1 s.
	Poll time.Duration
	// Timeout bounds one attempt (connect, TLS, request, response);
	// default 10 s. Lease, how long a claimed delivery is hidden from
	// other replicas, is at least twice that; default 30 s.
	Timeout, Lease time.Duration
	// BaseDelay and MaxDelay bound the exponential backoff between
	// attempts; defaults 1 s and 5 min.
	BaseDelay, MaxDelay time.Duration
	// GiveUpAfter is how long after its event a delivery is still tried;
	// then it is given up and audited (notification.failed). Default 24 h.
	GiveUpAfter time.Duration
	// Keep is how long finished deliveries stay in the outbox before they
	// are pruned (hourly); default 7 days.
	Keep time.Duration
	// Resolver resolves webhook host names (nil: the system's).
	Resolver *net.Resolver
	Now      func() time.Time
	Logger   *slog.Logger
	Metrics  *Metrics

	once    sync.Once
	clients map[string]*http.Client
	signers map[string]signer
	err     error
}

// Metrics are the notification worker's Prometheus metrics, by webhook
// key (never its URL).
type Metrics struct {
	Attempts *prometheus.CounterVec // by webhook and result (ok, error)
	Failed   *prometheus.CounterVec // deliveries given up, by webhook
}

// NewMetrics registers the worker's metrics, at 0 for every target.
func NewMetrics(reg prometheus.Registerer, targets []Target) (*Metrics, error) {
	m := &Metrics{
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_webhook_attempts_total", Help: "Webhook delivery attempts by webhook key and result (ok: a 2xx answer).",
		}, []string{"webhook", "result"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "errand_webhook_failed_total", Help: "Webhook deliveries given up (audited as notification.failed).",
		}, []string{"webhook"}),
	}
	for _, c := range []prometheus.Collector{m.Attempts, m.Failed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, t := range targets {
		m.Attempts.WithLabelValues(t.Key(), "ok")
		m.Attempts.WithLabelValues(t.Key(), "error")
		m.Failed.WithLabelValues(t.Key())
	}
	return m, nil
}

func (w *Worker) init() error {
	w.once.Do(func() {
		if w.Poll <= 0 {
			w.Poll = time.Second
		}
		if w.Timeout <= 0 {
			w.Timeout = 10 * time.Second
		}
		if w.Lease < 2*w.Timeout {
			w.Lease = max(30*time.Second, 2*w.Timeout)
		}
		if w.BaseDelay <= 0 {
			w.BaseDelay = time.Second
		}
		if w.MaxDelay <= 0 {
			w.MaxDelay = 5 * time.Minute
		}
		if w.GiveUpAfter <= 0 {
			w.GiveUpAfter = 24 * time.Hour
		}
		if w.Keep <= 0 {
			w.Keep = 7 * 24 * time.Hour
		}
		if w.Now == nil {
			w.Now = time.Now
		}
		if w.Logger == nil {
			w.Logger = slog.Default()
		}
		w.clients, w.signers = map[string]*http.Client{}, map[string]signer{}
		for _, t := range w.Targets {
			s, err := newSigner(t.Secrets)
			if err != nil {
				w.err = fmt.Errorf("webhook %s: %w", t.Redacted(), err)
				return
			}
			w.signers[t.Key()], w.clients[t.Key()] = s, newClient(t, w.Resolver, w.Timeout)
		}
	})
	return w.err
}

// Run delivers until ctx ends: one loop per webhook.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.init(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.prune(ctx)
	}()
	for _, t := range w.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, t)
		}()
	}
	wg.Wait()
	return nil
}

func (w *Worker) loop(ctx context.Context, t Target) {
	tick := time.NewTicker(w.Poll)
	defer tick.Stop()
	for {
		for {
			n, err := w.Drain(ctx, t)
			if err != nil && ctx.Err() == nil {
				w.Logger.Warn("webhook queue read failed", "webhook", t.Key(), "err", err)
			}
			if n == 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// prune deletes finished deliveries older than Keep, every hour.
func (w *Worker) prune(ctx context.Context) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		for {
			n, err := w.Store.PruneDeliveries(ctx, w.Now().Add(-w.Keep), 1000)
			if err != nil && ctx.Err() == nil {
				w.Logger.Warn("webhook outbox: cannot prune finished deliveries", "err", err)
			}
			if n < 1000 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Drain claims the deliveries to t due now and attempts each once, oldest
// first; it returns how many it claimed.
func (w *Worker) Drain(ctx context.Context, t Target) (int, error) {
	if err := w.init(); err != nil {
		return 0, err
	}
	ds, err := w.Store.ClaimDeliveries(ctx, t.Key(), w.Now(), w.Lease, 10)
	if err != nil {
		return 0, err
	}
	sort.Slice(ds, func(i, j int) bool {
		if !ds[i].CreatedAt.Equal(ds[j].CreatedAt) {
			return ds[i].CreatedAt.Before(ds[j].CreatedAt)
		}
		return ds[i].MsgID < ds[j].MsgID
	})
	for _, d := range ds {
		w.attempt(ctx, t, d)
	}
	return len(ds), nil
}

func (w *Worker) attempt(ctx context.Context, t Target, d broker.Delivery) {
	err := w.post(ctx, t, d)
	if err != nil && ctx.Err() != nil {
		// Shutting down: the attempt was cut short, not failed. Its lease
		// runs out and a worker tries again, with the same webhook-id.
		return
	}
	// What the attempt did is recorded even if shutdown begins meanwhile:
	// a delivered notice recorded as such is not sent again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err == nil {
		w.count(t, "ok")
		if cerr := w.Store.CompleteDelivery(ctx, d, w.Now()); cerr != nil {
			// The lease runs out and the receiver gets it again, with the
			// same webhook-id (at least once).
			w.Logger.Warn("webhook: cannot record a delivery", "webhook", t.Key(), "webhook_id", d.MsgID, "err", cerr)
		}
		return
	}
	w.count(t, "error")
	msg := err.Error()
	if w.Now().Sub(d.CreatedAt) >= w.GiveUpAfter {
		if ferr := w.Failures.RecordDeliveryFailure(ctx, d, msg); ferr != nil {
			w.Logger.Warn("webhook: cannot give up a delivery", "webhook", t.Key(), "webhook_id", d.MsgID, "err", ferr)
			return
		}
		if w.Metrics != nil {
			w.Metrics.Failed.WithLabelValues(t.Key()).Inc()
		}
		w.Logger.Error("webhook delivery given up", "webhook", t.Key(), "host", t.URL.Host, "webhook_id", d.MsgID,
			"event", d.Type, "task_id", d.TaskID, "attempts", d.Attempts, "err", msg)
		return
	}
	next := w.Now().Add(w.backoff(d.Attempts))
	if rerr := w.Store.RetryDelivery(ctx, d, next, msg); rerr != nil {
		w.Logger.Warn("webhook: cannot record a failed attempt", "webhook", t.Key(), "webhook_id", d.MsgID, "err", rerr)
	}
	w.Logger.Info("webhook delivery failed; will retry", "webhook", t.Key(), "host", t.URL.Host, "webhook_id", d.MsgID,
		"attempts", d.Attempts, "next_attempt_at", next, "err", msg)
}

// post sends d to t once; nil only for a 2xx answer. Its error names the
// host at most, never the URL's path or query (a Slack URL is a secret).
func (w *Worker) post(ctx context.Context, t Target, d broker.Delivery) error {
	var n broker.Notice
	if err := json.Unmarshal(d.Notice, &n); err != nil {
		return fmt.Errorf("the queued notice does not decode: %v", err)
	}
	body, err := Body(n, t.Format, w.PublicURL)
	if err != nil {
		return err
	}
	h, err := w.signers[t.Key()].headers(d.MsgID, w.Now(), body)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, t.URL.String(), bytes.NewReader(body))
	if err != nil {
		return errors.New("cannot make the request")
	}
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Errand-Webhooks/1")
	res, err := w.clients[t.Key()].Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post to %s: %v", t.URL.Host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		if res.StatusCode >= 300 && res.StatusCode < 400 {
			return fmt.Errorf("%s answered %d (a redirect, never followed)", t.URL.Host, res.StatusCode)
		}
		return fmt.Errorf("%s answered %d", t.URL.Host, res.StatusCode)
	}
	return nil
}

// backoff is capped exponential with full jitter: attempt n waits up to
// BaseDelay·2^(n-1), never more than MaxDelay.
func (w *Worker) backoff(attempts int) time.Duration {
	d := w.BaseDelay
	for i := 1; i < attempts && d < w.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, w.MaxDelay)
	return d/2 + rand.N(d/2+1)
}

func (w *Worker) count(t Target, result string) {
	if w.Metrics != nil {
		w.Metrics.Attempts.WithLabelValues(t.Key(), result).Inc()
	}
}
