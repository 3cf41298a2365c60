package plane

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// Client talks to a plane's operator API: as root over its local
// socket, or with an operator certificate over mutual TLS.
type Client struct {
	hc   *http.Client
	base string
	at   string
}

// NewClient returns a client for the local socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr}, base: "http://plane", at: path}
}

// ClientOption configures NewTLSClient.
type ClientOption func(*http.Transport)

// WithDialer replaces the TCP dialer of a TLS client (a lab's client dials
// from inside a network namespace).
func WithDialer(dial func(ctx context.Context, network, address string) (net.Conn, error)) ClientOption {
	return func(t *http.Transport) { t.DialContext = dial }
}

// NewTLSClient returns a client for the API at address (host:port) over
// mutual TLS with cfg (mtls.Source.ClientConfig, expecting the plane's
// identity).
func NewTLSClient(address string, cfg *tls.Config, opts ...ClientOption) *Client {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	for _, o := range opts {
		o(tr)
	}
	return &Client{hc: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}, base: "https://" + address, at: address}
}

// Do sends a request and decodes the answer into out (if not nil). A non-200
// answer is returned as an error carrying the plane's message.
func (c *Client) Do(ctx context.Context, method, route string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+route, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("plane at %s: %w", c.at, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e APIError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("plane: %s (HTTP %s)", e.Error, strconv.Itoa(resp.StatusCode))
		}
		return fmt.Errorf("plane: HTTP %d: %s", resp.StatusCode, data)
	}
	if out != nil {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = append((*raw)[:0], data...)
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("plane answer: %w", err)
		}
	}
	return nil
}
