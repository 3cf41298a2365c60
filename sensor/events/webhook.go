package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// WebhookSink POSTs each event as a JSON body to a URL from a bounded queue,
// retrying failures (network errors, 5xx, 429) with exponential back-off.
// When the queue is full the oldest event is dropped and counted: a slow
// SIEM must never stall the sensor.
type WebhookSink struct {
	url      string
	client   *http.Client
	log      *zap.Logger
	queue    chan Event
	attempts int
	base     time.Duration
	maxWait  time.Duration
	wg       sync.WaitGroup
	stop     chan struct{}
	once     sync.Once
	// Dropped counts events given up (queue overflow or retries exhausted).
	Dropped atomic.Uint64
	// Sent counts events delivered.
	Sent atomic.Uint64
}

// WebhookOption configures a WebhookSink.
type WebhookOption func(*WebhookSink)

// WithRetry sets the attempts per event and the first and largest back-off.
func WithRetry(attempts int, base, maxWait time.Duration) WebhookOption {
	return func(w *WebhookSink) { w.attempts, w.base, w.maxWait = attempts, base, maxWait }
}

// WithQueue sets the queue length.
func WithQueue(n int) WebhookOption { return func(w *WebhookSink) { w.queue = make(chan Event, n) } }

// WithUnixSocket sends every request over the unix socket at path instead
// of TCP; the URL's host is then only a name. The control plane listens so,
// and authenticates the sensor by its peer credentials.
func WithUnixSocket(path string) WebhookOption {
	return func(w *WebhookSink) {
		var d net.Dialer
		w.client.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConns: 1,
		}
	}
}

// WithWebhookLogger sets the logger.
func WithWebhookLogger(l *zap.Logger) WebhookOption { return func(w *WebhookSink) { w.log = l } }

// NewWebhookSink starts the sender for an http(s) URL.
func NewWebhookSink(rawURL string, opts ...WebhookOption) (*WebhookSink, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook URL %q: want http(s)://host/path", rawURL)
	}
	w := &WebhookSink{url: u.String(), client: &http.Client{Timeout: 5 * time.Second}, log: zap.NewNop(),
		queue: make(chan Event, 1024), attempts: 6, base: 200 * time.Millisecond, maxWait: 10 * time.Second,
		stop: make(chan struct{})}
	for _, o := range opts {
		o(w)
	}
	if w.attempts < 1 || w.base <= 0 || w.maxWait < w.base || cap(w.queue) < 1 {
		return nil, fmt.Errorf("webhook: invalid retry or queue settings")
	}
	w.wg.Add(1)
	go w.run()
	return w, nil
}

// Emit queues e, dropping the oldest queued event if full.
func (w *WebhookSink) Emit(_ context.Context, e Event) error {
	for {
		select {
		case w.queue <- e:
			return nil
		default:
		}
		select {
		case <-w.queue:
			w.Dropped.Add(1)
		default:
		}
	}
}

// Close stops after trying to deliver what is queued (bounded by the retry
// policy of the event in flight).
func (w *WebhookSink) Close() error {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
	return nil
}

func (w *WebhookSink) run() {
	defer w.wg.Done()
	for {
		select {
		case e := <-w.queue:
			w.deliver(e)
		case <-w.stop:
			for {
				select {
				case e := <-w.queue:
					w.deliver(e)
				default:
					return
				}
			}
		}
	}
}

func (w *WebhookSink) deliver(e Event) {
	body, err := json.Marshal(e)
	if err != nil {
		w.Dropped.Add(1)
		return
	}
	wait := w.base
	for attempt := 1; ; attempt++ {
		retry, err := w.post(body)
		if err == nil {
			w.Sent.Add(1)
			return
		}
		if !retry || attempt >= w.attempts {
			w.Dropped.Add(1)
			w.log.Warn("webhook gave up on an event", zap.String("type", e.Type), zap.Int("attempts", attempt), zap.Error(err))
			return
		}
		select {
		case <-time.After(wait):
		case <-w.stop:
			// Shutting down: one last try per event, no more waiting.
			if _, err := w.post(body); err == nil {
				w.Sent.Add(1)
			} else {
				w.Dropped.Add(1)
			}
			return
		}
		wait = min(2*wait, w.maxWait)
	}
}

// post sends once; it reports whether a failure is worth retrying.
func (w *WebhookSink) post(body []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("webhook post: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook post: %s", resp.Status)
	}
	return false, fmt.Errorf("webhook post: %s (not retried)", resp.Status)
}
