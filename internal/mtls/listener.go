package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

const (
	// HandshakeTimeout bounds a Listener's handshake: a client that
	// connects and says nothing is dropped.
	HandshakeTimeout = 10 * time.Second
	// MaxPendingHandshakes bounds a Listener's connections accepted but not
	// yet handed to Accept; beyond it new connections wait in the kernel's
	// backlog, so a flood costs bounded memory.
	MaxPendingHandshakes = 128
)

// Listener wraps l for an HTTPS server (the plane's operator API): each
// connection's handshake runs on a goroutine of its own, so a slow or
// hostile client never holds up Accept for the others, and failed
// handshakes are classified, logged and counted. Accept returns only
// connections whose client is verified and has one of the allowed roles,
// as *tls.Conn, so net/http fills r.TLS; IdentityFromTLS(r.TLS) names the
// client. ALPN offers h2 and http/1.1.
//
// A plaintext HTTP request is answered "400 Bad Request" with a line
// saying the server speaks HTTPS, as net/http itself would.
func (s *Source) Listener(l net.Listener, allow ...Role) net.Listener {
	cfg := s.ServerConfig(allow...)
	cfg.NextProtos = []string{"h2", "http/1.1"}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tlsListener{
		inner:   l,
		src:     s,
		cfg:     cfg,
		ready:   make(chan *tls.Conn),
		slots:   make(chan struct{}, MaxPendingHandshakes),
		stopped: make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}
	go tl.acceptLoop()
	return tl
}

type tlsListener struct {
	inner net.Listener
	src   *Source
	cfg   *tls.Config
	ready chan *tls.Conn
	slots chan struct{}

	stopped chan struct{} // closed when acceptLoop has ended, err set
	err     error

	ctx       context.Context // canceled by Close: handshakes under way stop
	cancel    context.CancelFunc
	closeOnce sync.Once
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.stopped:
		return nil, l.err
	}
}

func (l *tlsListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.cancel()
		err = l.inner.Close()
	})
	return err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

func (l *tlsListener) acceptLoop() {
	defer close(l.stopped)
	backoff := 5 * time.Millisecond
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			l.err = net.ErrClosed
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			if !retryable(err) || l.ctx.Err() != nil {
				l.err = err
				return
			}
			l.src.log.Warn("mtls: accept failed, retrying", zap.Duration("in", backoff), zap.Error(err))
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		go l.handshake(c)
	}
}

// retryable: errors of the moment (out of descriptors, a connection reset
// before it was accepted) rather than of the listener.
func retryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *tlsListener) handshake(c net.Conn) {
	defer func() { <-l.slots }()
	tc := tls.Server(c, l.cfg)
	ctx, cancel := context.WithTimeout(l.ctx, HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.src.refused(sideServer, c.RemoteAddr(), err)
		answerPlaintext(err)
		c.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		tc.Close()
	}
}

// answerPlaintext tells a client that spoke plain HTTP what went wrong.
func answerPlaintext(err error) {
	var rh tls.RecordHeaderError
	if !errors.As(err, &rh) || rh.Conn == nil || !looksLikeHTTP(rh.RecordHeader) {
		return
	}
	_ = rh.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = rh.Conn.Write([]byte("HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" +
		"This server speaks HTTPS with client certificates (mutual TLS) only.\n"))
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH":
		return true
	}
	return false
}
