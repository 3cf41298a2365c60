package agentapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
)

// The cost of the agent API over its transport: a unary step over mTLS
// on loopback, and an image through Peers/Transfer against the same bytes
// copied over plain TCP and over plain TLS 1.3 with the same
// certificates (a new connection per operation in all three, as Peers
// dials one per transfer). Run:
//
//	go test -run '^$' -bench . -benchtime 3x ./plane/agentapi/

const benchImage = 64 << 20

func BenchmarkRoundTrip(b *testing.B) {
	p := newPKI(b)
	a := startAgent(b, p, idH1, agentOpts{})
	a.host.set("Hello", migrate.HostInfo{Name: "h1", Version: "v1", BootID: "b"}, nil)
	a.host.set("Status", migrate.ContainerStatus{Status: migrate.Running, PID: 1}, nil)
	c := dial(b, newSource(b, p.files(b, idPlane, nil)), a)
	ctx := context.Background()
	if _, err := c.Hello(ctx); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	b.Run("Hello", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Hello(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Status", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Status(ctx, "c"); err != nil {
				b.Fatal(err)
			}
		}
	})
	a.host.mu.Lock()
	a.host.calls = nil // the recording would grow with b.N
	a.host.mu.Unlock()
}

func BenchmarkStreamImage(b *testing.B) {
	p := newPKI(b)
	a := startAgent(b, p, idH1, agentOpts{})
	data := randomBytes(b, benchImage)
	a.host.offer("bench", &fakeOffer{to: "h2", data: data, expires: time.Now().Add(time.Hour), reusable: true})
	peers := peersOf(b, newSource(b, p.files(b, idH2, nil)))
	peer := migrate.Peer{Name: "h1", Address: a.addr, Ticket: "bench"}
	ctx := context.Background()
	b.SetBytes(benchImage)
	for b.Loop() {
		r, err := peers.Open(ctx, peer)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil || n != benchImage {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}

// benchCopy serves data on every connection l accepts (after wrap) and
// reads it back through dial, once per iteration.
func benchCopy(b *testing.B, l net.Listener, wrap func(net.Conn) net.Conn, dial func() (net.Conn, error)) {
	data := randomBytes(b, benchImage)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c = wrap(c)
				_, _ = io.Copy(c, bytes.NewReader(data))
			}()
		}
	}()
	b.Cleanup(func() { l.Close() })
	b.SetBytes(benchImage)
	for b.Loop() {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != benchImage {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}

func BenchmarkBaselineTCP(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	benchCopy(b, l, func(c net.Conn) net.Conn { return c }, func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) })
}

func BenchmarkBaselineTLS(b *testing.B) {
	p := newPKI(b)
	server := newSource(b, p.files(b, idH1, nil))
	client := newSource(b, p.files(b, idH2, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	scfg := server.ServerConfig(mtls.RoleAgent)
	ccfg := client.ClientConfig(idH1)
	benchCopy(b, l, func(c net.Conn) net.Conn { return tls.Server(c, scfg) }, func() (net.Conn, error) {
		return tls.Dial("tcp", l.Addr().String(), ccfg)
	})
}
