package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// WebhookSink POSTs each event as a JSON body to a URL from a bounded queue,
// retrying failures (network errors, 5xx, 429) with exponential back-off.
// When the queue is full the oldest event is dropped and counted: a slow
// SIEM must never stall the sensor.
//
// It is hardened for a SIEM across a network (docs/operations.md, "Webhook
// sink"): plain http is refused unless allowed (WithInsecureHTTP), an auth
// header comes from a file re-read when it changes (WithAuthHeaderFile)
// and is never logged, redirects are not followed (a 3xx is a failure,
// not retried), only the allowed container labels leave the host
// (WithLabels; DefaultWebhookLabels otherwise), and the server's
// certificate can be checked against a CA of its own (WithCAFile).
type WebhookSink struct {
	url      string
	client   *http.Client
	log      *zap.Logger
	queue    chan Event
	attempts int
	base     time.Duration
	maxWait  time.Duration
	labels   LabelFilter
	auth     *authFile
	wg       sync.WaitGroup
	stop     chan struct{}
	once     sync.Once
	// Dropped counts events given up (queue overflow or retries exhausted).
	Dropped atomic.Uint64
	// Sent counts events delivered.
	Sent atomic.Uint64
}

// webhookSettings are what the options set; NewWebhookSink builds the
// sink from them once all are known.
type webhookSettings struct {
	attempts      int
	base, maxWait time.Duration
	queue         int
	unixSocket    string
	log           *zap.Logger
	insecureHTTP  bool
	authFile      string
	caFile        string
	labels        []string
}

// WebhookOption configures a WebhookSink.
type WebhookOption func(*webhookSettings)

// WithRetry sets the attempts per event and the first and largest back-off.
func WithRetry(attempts int, base, maxWait time.Duration) WebhookOption {
	return func(w *webhookSettings) { w.attempts, w.base, w.maxWait = attempts, base, maxWait }
}

// WithQueue sets the queue length.
func WithQueue(n int) WebhookOption { return func(w *webhookSettings) { w.queue = n } }

// WithUnixSocket sends every request over the unix socket at path instead
// of TCP; the URL's host is then only a name. Plain http is then allowed:
// nothing crosses a network.
func WithUnixSocket(path string) WebhookOption {
	return func(w *webhookSettings) { w.unixSocket = path }
}

// WithWebhookLogger sets the logger.
func WithWebhookLogger(l *zap.Logger) WebhookOption { return func(w *webhookSettings) { w.log = l } }

// WithInsecureHTTP allows a plain http:// URL over TCP: events (container
// ids, labels, system calls) and the auth header then cross the network in
// clear.
func WithInsecureHTTP() WebhookOption { return func(w *webhookSettings) { w.insecureHTTP = true } }

// WithAuthHeaderFile sends the header in the file at path with every
// request (ParseAuthHeader gives its forms). The file is checked on every
// request and re-read when it changed, so a rotated secret is used from
// the next request on.
func WithAuthHeaderFile(path string) WebhookOption {
	return func(w *webhookSettings) { w.authFile = path }
}

// WithCAFile checks the server's certificate against the PEM
// certificates in the file at path only, instead of the system's roots.
func WithCAFile(path string) WebhookOption { return func(w *webhookSettings) { w.caFile = path } }

// WithLabels sets the container label keys sent (LabelFilter's patterns);
// every other label is stripped from the event before it is sent. An
// empty list sends none.
func WithLabels(patterns []string) WebhookOption {
	return func(w *webhookSettings) { w.labels = append([]string{}, patterns...) }
}

// NewWebhookSink starts the sender for an https URL (or http, if allowed).
func NewWebhookSink(rawURL string, opts ...WebhookOption) (*WebhookSink, error) {
	s := webhookSettings{attempts: 6, base: 200 * time.Millisecond, maxWait: 10 * time.Second, queue: 1024,
		log: zap.NewNop(), labels: DefaultWebhookLabels}
	for _, o := range opts {
		o(&s)
	}
	u, err := CheckWebhookURL(rawURL, s.insecureHTTP || s.unixSocket != "")
	if err != nil {
		return nil, err
	}
	if s.attempts < 1 || s.base <= 0 || s.maxWait < s.base || s.queue < 1 {
		return nil, fmt.Errorf("webhook: invalid retry or queue settings")
	}
	labels, err := NewLabelFilter(s.labels)
	if err != nil {
		return nil, fmt.Errorf("webhook labels: %w", err)
	}
	transport, err := s.transport()
	if err != nil {
		return nil, err
	}
	w := &WebhookSink{url: u.String(), log: s.log, queue: make(chan Event, s.queue), attempts: s.attempts,
		base: s.base, maxWait: s.maxWait, labels: labels, stop: make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second, Transport: transport,
			// A redirect is not followed: it would carry the events, and
			// a header the SIEM's owner never meant for it, elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if s.authFile != "" {
		if w.auth, err = openAuthFile(s.authFile); err != nil {
			return nil, err
		}
	}
	w.wg.Add(1)
	go w.run()
	return w, nil
}

// ErrPlainHTTP refuses an http:// webhook that was not explicitly allowed.
var ErrPlainHTTP = errors.New("plain http: the events and the auth header would cross the network in clear; use https, or allow plain http explicitly")

// CheckWebhookURL parses a webhook URL: https, or http only if
// allowInsecure; a host; no credentials (they belong in the auth header
// file, not in a configuration that is logged and shown).
func CheckWebhookURL(rawURL string, allowInsecure bool) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook URL %q: want https://host/path", rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("webhook URL %s: holds credentials; put them in an auth header file", u.Redacted())
	}
	if u.Scheme == "http" && !allowInsecure {
		return nil, fmt.Errorf("webhook URL %s: %w", u.Redacted(), ErrPlainHTTP)
	}
	return u, nil
}

func (s webhookSettings) transport() (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("webhook CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook CA file %s: no PEM certificate in it", s.caFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	if s.unixSocket != "" {
		var d net.Dialer
		path := s.unixSocket
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		t.Proxy = nil
		t.MaxIdleConns = 1
	}
	return t, nil
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
	body, err := json.Marshal(w.labels.Apply(e))
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
			w.giveUp(e, attempt, err)
			return
		}
		select {
		case <-time.After(wait):
		case <-w.stop:
			// Shutting down: one last try per event, no more waiting.
			if _, err := w.post(body); err == nil {
				w.Sent.Add(1)
			} else {
				w.giveUp(e, attempt+1, err)
			}
			return
		}
		wait = min(2*wait, w.maxWait)
	}
}

func (w *WebhookSink) giveUp(e Event, attempts int, err error) {
	w.Dropped.Add(1)
	w.log.Warn("webhook gave up on an event", zap.String("type", e.Type), zap.Int("attempts", attempts), zap.Error(err))
}

// errRedirect marks a 3xx answer: not followed, not retried.
var errRedirect = errors.New("webhook post: redirected")

// post sends once; it reports whether a failure is worth retrying.
func (w *WebhookSink) post(body []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if w.auth != nil {
		h, err := w.auth.header()
		if err != nil {
			w.log.Warn("webhook auth header file changed and cannot be used", zap.Error(err))
		}
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// A certificate that does not verify will not verify on the next
		// try either.
		var cert *tls.CertificateVerificationError
		return !errors.As(err, &cert), fmt.Errorf("webhook post: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return false, fmt.Errorf("%w: %s to %q (redirects are not followed; point the sink at the final URL)",
			errRedirect, resp.Status, resp.Header.Get("Location"))
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook post: %s", resp.Status)
	}
	return false, fmt.Errorf("webhook post: %s (not retried)", resp.Status)
}
