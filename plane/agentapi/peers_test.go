package agentapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
)

// peersOf is the Peers of the agent whose Source is src, as the node
// agent makes it (cmd/escape-sensor/agent.go).
func peersOf(t testing.TB, src *source, opts ...ClientOption) *Peers {
	t.Helper()
	p, err := NewPeers(func(peer string) credentials.TransportCredentials {
		return src.ClientCredentials(mtls.Identity{Role: mtls.RoleAgent, Name: peer})
	}, append([]ClientOption{WithDialOptions(grpc.WithChainUnaryInterceptor(mtls.UnaryClientInterceptor(src.Source)),
		grpc.WithChainStreamInterceptor(mtls.StreamClientInterceptor(src.Source)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fetch opens what peer offers and reads it all.
func fetch(ctx context.Context, p *Peers, peer migrate.Peer) ([]byte, error) {
	return fetchCounting(ctx, p, peer, nil)
}

// fetchCounting is fetch that counts the bytes read in n as it goes.
func fetchCounting(ctx context.Context, p *Peers, peer migrate.Peer, n *atomic.Int64) ([]byte, error) {
	r, err := p.Open(ctx, peer)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	buf := make([]byte, 256<<10)
	for {
		k, err := r.Read(buf)
		out.Write(buf[:k])
		if n != nil {
			n.Add(int64(k))
		}
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// Two agents: h2 fetches from h1 what h1 offered to h2, and h1's backend
// is told the requester's name from its certificate.
func TestTransferValidTicket(t *testing.T) {
	p := newPKI(t)
	h1 := startAgent(t, p, idH1, agentOpts{})
	h2 := newSource(t, p.files(t, idH2, nil))
	peers := peersOf(t, h2)
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, 5*chunkSize + 12345} {
		data := randomBytes(t, size)
		ticket := migrate.Ticket(strings.Repeat("a", 8) + string(rune('a'+size%26)))
		h1.host.offer(ticket, &fakeOffer{to: "h2", data: data, expires: time.Now().Add(time.Minute)})
		got, err := fetch(testCtx(t), peers, migrate.Peer{Name: "h1", Address: h1.addr, Ticket: ticket})
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: got %d bytes, not the same", size, len(got))
		}
		last, _ := h1.host.lastCall()
		if want := (call{Method: "ServeOffer", Args: []any{ticket, "h2"}}); last.Method != want.Method || last.Args[0] != want.Args[0] || last.Args[1] != want.Args[1] {
			t.Fatalf("backend got %+v, want %+v", last, want)
		}
	}
}

// A ticket that is unknown, expired, already used, or offered to another
// host is refused as migrate.ErrTicket, not as an unreachable host; an
// empty ticket is an invalid request.
func TestTransferRefusedTickets(t *testing.T) {
	p := newPKI(t)
	h1 := startAgent(t, p, idH1, agentOpts{})
	h2 := peersOf(t, newSource(t, p.files(t, idH2, nil)))
	h3 := peersOf(t, newSource(t, p.files(t, idH3, nil)))
	data := randomBytes(t, 3*chunkSize)
	h1.host.offer("good", &fakeOffer{to: "h2", data: data, expires: time.Now().Add(time.Minute)})
	h1.host.offer("old", &fakeOffer{to: "h2", data: data, expires: time.Now().Add(-time.Second)})
	at := func(ticket migrate.Ticket) migrate.Peer {
		return migrate.Peer{Name: "h1", Address: h1.addr, Ticket: ticket}
	}
	refused := func(t *testing.T, p *Peers, ticket migrate.Ticket, want string) {
		t.Helper()
		got, err := fetch(testCtx(t), p, at(ticket))
		if !errors.Is(err, migrate.ErrTicket) || errors.Is(err, migrate.ErrUnreachable) {
			t.Fatalf("ticket %q: %v, want ErrTicket", ticket, err)
		}
		if len(got) != 0 {
			t.Fatalf("ticket %q: %d bytes served", ticket, len(got))
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	t.Run("unknown", func(t *testing.T) { refused(t, h2, "nope", "unknown ticket") })
	t.Run("expired", func(t *testing.T) { refused(t, h2, "old", "expired") })
	// h3 holds h2's ticket: the requester is who the certificate says.
	t.Run("wrong peer", func(t *testing.T) {
		refused(t, h3, "good", `asked by "h3"`)
		last, _ := h1.host.lastCall()
		if last.Args[1] != "h3" {
			t.Fatalf("requester %v, want h3 from its certificate", last.Args[1])
		}
	})
	t.Run("reused", func(t *testing.T) {
		if got, err := fetch(testCtx(t), h2, at("good")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("first use: %d bytes, %v", len(got), err)
		}
		refused(t, h2, "good", "already used")
	})
	t.Run("empty", func(t *testing.T) {
		_, err := fetch(testCtx(t), h2, at(""))
		if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
			t.Fatalf("empty ticket: %v, want InvalidArgument", err)
		}
	})
	// h2 dials h1's address believing it is h3: the handshake fails.
	t.Run("wrong host", func(t *testing.T) {
		_, err := fetch(testCtx(t), h2, migrate.Peer{Name: "h3", Address: h1.addr, Ticket: "good"})
		if !errors.Is(err, migrate.ErrUnreachable) {
			t.Fatalf("h1 posing as h3: %v, want a refused handshake", err)
		}
	})
}

// recordingDialer dials TCP and keeps the connections, so that a test can
// cut them.
type recordingDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *recordingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *recordingDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// A transfer interrupted mid-stream fails at the reader, never as a clean
// end of file, and a new Open with the same ticket streams the whole
// offer again from its first byte (the ticket serves until it expires or
// is served whole).
func TestTransferInterrupted(t *testing.T) {
	p := newPKI(t)
	h1 := startAgent(t, p, idH1, agentOpts{})
	h2 := newSource(t, p.files(t, idH2, nil))
	data := randomBytes(t, 8*chunkSize)
	const cutAfter = 3 * chunkSize
	var progress atomic.Int64
	check := func(t *testing.T, peers *Peers, ticket migrate.Ticket, want error) {
		t.Helper()
		progress.Store(0)
		peer := migrate.Peer{Name: "h1", Address: h1.addr, Ticket: ticket}
		got, err := fetchCounting(testCtx(t), peers, peer, &progress)
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("an interrupted transfer ended with %v after %d of %d bytes: a truncation must be an error", err, len(got), len(data))
		}
		if want != nil && !errors.Is(err, want) {
			t.Fatalf("interrupted: %v, want %v", err, want)
		}
		if len(got) >= len(data) || !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("interrupted after %d bytes: not a prefix of the offer", len(got))
		}
		t.Logf("interrupted after %d bytes: %v", len(got), err)
		got, err = fetch(testCtx(t), peers, peer)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("restarted transfer: %d of %d bytes, %v", len(got), len(data), err)
		}
	}
	t.Run("source fails", func(t *testing.T) {
		h1.host.offer("t1", &fakeOffer{to: "h2", data: data, expires: time.Now().Add(time.Minute), cutAfter: cutAfter,
			cut: func() {}, cutErr: errors.New("read pages-1.img: input/output error")})
		check(t, peersOf(t, h2), "t1", nil)
	})
	t.Run("connection cut", func(t *testing.T) {
		var d recordingDialer
		// Cut once the reader has had some of it, in the middle of the
		// stream.
		cut := func() {
			eventually(t, "the reader to get a first megabyte", func() bool { return progress.Load() >= chunkSize })
			d.cut()
		}
		h1.host.offer("t2", &fakeOffer{to: "h2", data: data, expires: time.Now().Add(time.Minute), cutAfter: cutAfter, cut: cut})
		check(t, peersOf(t, h2, WithDialer(d.dial)), "t2", migrate.ErrUnreachable)
	})
	// The reader closed early ends the source's side too.
	t.Run("reader closed", func(t *testing.T) {
		release := make(chan struct{})
		h1.host.offer("t3", &fakeOffer{to: "h2", data: data, expires: time.Now().Add(time.Minute), cutAfter: cutAfter,
			cut: func() { close(release) }})
		r, err := peersOf(t, h2).Open(testCtx(t), migrate.Peer{Name: "h1", Address: h1.addr, Ticket: "t3"})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, chunkSize)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		<-release
		r.Close()
		// What had arrived may still be read, but the stream ends in an
		// error, never as a whole transfer.
		var rerr error
		for range 16 {
			if _, rerr = r.Read(buf); rerr != nil {
				break
			}
		}
		if rerr == nil || errors.Is(rerr, io.EOF) {
			t.Fatalf("a closed reader ends with %v", rerr)
		}
		eventually(t, "the source's ServeOffer to end", func() bool { return h1.host.serving.Load() == 0 })
	})
}
