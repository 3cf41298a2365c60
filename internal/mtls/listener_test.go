package mtls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// startHTTPS serves, through src.Listener, a handler that answers the
// caller's identity.
func startHTTPS(t *testing.T, src *Source, allow ...Role) (addr string, l net.Listener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l = src.Listener(inner, allow...)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _, err := IdentityFromTLS(r.TLS)
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			fmt.Fprintf(w, "%s %s", id, r.Proto)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return inner.Addr().String(), l
}

func httpsClient(src *Source, expect Identity) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: src.ClientConfig(expect), ForceAttemptHTTP2: true},
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), err
}

// TestListenerServesOperators: an operator reaches the plane's HTTPS API,
// over HTTP/2 and HTTP/1.1, and the handler learns who from r.TLS; an
// agent is refused at the handshake, and counted.
func TestListenerServesOperators(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	plane := newObserved(t, writeIdentity(t, ca, thePlane, WithIPs(loopback)))
	addr, _ := startHTTPS(t, plane.Source, RoleOperator)
	op := newObserved(t, writeIdentity(t, ca, alice))

	body, err := get(httpsClient(op.Source, thePlane), "https://"+addr+"/")
	if err != nil || body != "operator/alice HTTP/2.0" {
		t.Fatalf("operator over HTTP/2: %q, %v", body, err)
	}
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: op.ClientConfig(thePlane)}}
	h1.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
	if body, err := get(h1, "https://"+addr+"/"); err != nil || body != "operator/alice HTTP/1.1" {
		t.Fatalf("operator over HTTP/1.1: %q, %v", body, err)
	}

	// Read right after the handshake, where TLS 1.3 delivers the verdict
	// (an HTTP client may hit a broken pipe on its write first).
	agent := newObserved(t, writeIdentity(t, ca, agentH1))
	err = rawTLSCall(t, addr, agent.ClientConfig(thePlane))
	if err == nil || !strings.Contains(err.Error(), "remote error: tls: bad certificate") {
		t.Fatalf("agent on the operator API: %v, want a refused handshake", err)
	}
	assertRefused(t, plane, sideServer, ReasonRole, "agent/h1")
}

// TestListenerPlaintextHTTP: curl http:// against the HTTPS port gets a
// 400 saying what to do instead, and the refusal is counted.
func TestListenerPlaintextHTTP(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	addr, _ := startHTTPS(t, plane.Source, RoleOperator)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS with client certificates") {
		t.Fatalf("plaintext GET: %s %q", resp.Status, b)
	}
	assertRefused(t, plane, sideServer, ReasonPlaintext, "")
}

// TestListenerSlowClientDoesNotBlockOthers: a client that connects and
// says nothing holds only its own handshake; another is served meanwhile.
func TestListenerSlowClientDoesNotBlockOthers(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	addr, _ := startHTTPS(t, plane.Source, RoleOperator)
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond) // let the silent one be accepted first
	op := newObserved(t, writeIdentity(t, ca, alice))
	if body, err := get(httpsClient(op.Source, thePlane), "https://"+addr+"/"); err != nil || !strings.HasPrefix(body, "operator/alice") {
		t.Fatalf("operator behind a silent client: %q, %v", body, err)
	}
	// Served while the silent client's handshake is still pending, not
	// after the server gave up on it.
	silent.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if _, err := silent.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("the silent client's connection: %v, want it still open", err)
	}
}

// TestListenerFloodIsBounded: hundreds of silent connections cost at most
// MaxPendingHandshakes handshakes in flight, a goroutine each; the rest
// wait in the kernel's backlog. Once they go, operators are served again, and each
// broken handshake was counted.
func TestListenerFloodIsBounded(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	addr, _ := startHTTPS(t, plane.Source, RoleOperator)
	base := runtime.NumGoroutine()
	const flood = 4 * MaxPendingHandshakes
	conns := make([]net.Conn, 0, flood)
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, "the handshake slots to fill", func() bool {
		return runtime.NumGoroutine()-base >= MaxPendingHandshakes
	})
	time.Sleep(100 * time.Millisecond) // give an unbounded accept loop the time to overshoot
	if extra, limit := runtime.NumGoroutine()-base, MaxPendingHandshakes+10; extra > limit {
		t.Fatalf("%d goroutines for %d silent connections, want at most %d", extra, flood, limit)
	}
	for _, c := range conns {
		c.Close()
	}
	op := newObserved(t, writeIdentity(t, ca, alice))
	if _, err := get(httpsClient(op.Source, thePlane), "https://"+addr+"/"); err != nil {
		t.Fatalf("operator after the flood: %v", err)
	}
	eventually(t, "every broken handshake to be counted", func() bool {
		return plane.refusals(t, sideServer, ReasonOther) == flood
	})
}

// TestListenerClose: Accept returns once the listener is closed, and a
// connection arriving later is not served.
func TestListenerClose(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := plane.Listener(inner, RoleOperator)
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	if _, err := net.Dial("tcp", inner.Addr().String()); err == nil {
		t.Fatal("the closed listener still takes connections")
	}
}

// TestNoSessionResumption: a client that keeps session tickets still does
// a full handshake each time, so every connection is verified against the
// CA pool in use then, never resumed on a verdict from before a rotation.
func TestNoSessionResumption(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	addr, _ := startHTTPS(t, plane.Source, RoleOperator)
	op := newObserved(t, writeIdentity(t, ca, alice))
	cfg := op.ClientConfig(thePlane)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	for i := range 3 {
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.TLS.DidResume {
			t.Fatalf("connection %d resumed a session", i+1)
		}
	}
}
