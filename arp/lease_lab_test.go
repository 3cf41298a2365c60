package arp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	leaseEchoTCP = 7007
	leaseEchoUDP = 7008
	// silence is how long a test waits for an answer it expects never to
	// come. It is a liveness bound, not a measurement: on veth a reply
	// takes well under a millisecond.
	silence = 400 * time.Millisecond
)

// leaseLab is two namespaces joined by a veth pair: a holds the leased
// address (and a second one that carries no lease) and runs TCP and UDP
// echo servers; b is the client.
type leaseLab struct {
	a, b  Endpoint
	addr  netip.Addr // leased, on a
	other netip.Addr // on a, no lease
	peer  netip.Addr // on b
	macA  net.HardwareAddr
	// track closes a socket when the test ends.
	track func(io.Closer)
}

func newLeaseLab(t testing.TB) *leaseLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, nftables)")
	}
	prefix := fmt.Sprintf("escape-lt-%d", os.Getpid())
	l := &leaseLab{
		a:     Endpoint{Netns: prefix + "-a", Link: "eth0"},
		b:     Endpoint{Netns: prefix + "-b", Link: "eth0"},
		addr:  netip.MustParseAddr("198.18.1.10"),
		other: netip.MustParseAddr("198.18.1.11"),
		peer:  netip.MustParseAddr("198.18.1.20"),
	}
	var closers []io.Closer
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range closers {
			_ = c.Close()
		}
		mu.Unlock()
		for _, ns := range []string{l.a.Netns, l.b.Netns} {
			if err := DeleteNetns(ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	track := func(c io.Closer) {
		mu.Lock()
		closers = append(closers, c)
		mu.Unlock()
	}
	for _, ns := range []string{l.a.Netns, l.b.Netns} {
		_ = DeleteNetns(ns) // left over from a killed run
		if err := CreateNetns(ns); err != nil {
			t.Fatal(err)
		}
	}
	ha, err := Handle(l.a.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	peer, err := ha.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	nsb, err := netns.GetFromName(l.b.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsb.Close()
	if err := ha.LinkSetNsFd(peer, int(nsb)); err != nil {
		t.Fatal(err)
	}
	hb, err := Handle(l.b.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	pb, err := hb.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.LinkSetName(pb, "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		ep Endpoint
		p  string
	}{{l.a, l.addr.String() + "/15"}, {l.a, l.other.String() + "/15"}, {l.b, l.peer.String() + "/15"}} {
		if err := AddAddress(a.ep, netip.MustParsePrefix(a.p)); err != nil {
			t.Fatal(err)
		}
	}
	li, err := Link(l.a)
	if err != nil {
		t.Fatal(err)
	}
	l.macA = li.MAC

	// Echo servers in a, on every address (loopback included).
	err = Do(l.a.Netns, func() error {
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", leaseEchoTCP))
		if err != nil {
			return err
		}
		track(ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				track(c)
				go func() { _, _ = io.Copy(c, c) }()
			}
		}()
		pc, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", leaseEchoUDP))
		if err != nil {
			return err
		}
		track(pc)
		_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l.track = track
	return l
}

// dial connects from ns to addr's TCP echo server.
func (l *leaseLab) dial(ns string, addr netip.Addr, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(addr, leaseEchoTCP).String())
		return err
	})
	if c != nil {
		l.track(c)
	}
	return c, err
}

// echo sends msg over c and reports whether it came back within timeout.
func echo(c net.Conn, msg string, timeout time.Duration) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// mustServe checks that b reaches the address, end to end.
func (l *leaseLab) mustServe(t *testing.T, what string) {
	t.Helper()
	c, err := l.dial(l.b.Netns, l.addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s: dial from b: %v", what, err)
	}
	defer c.Close()
	if err := echo(c, "hello "+what, 2*time.Second); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// mustBeFenced checks that a dial from b gets no answer at all: no
// SYN-ACK and no reset, only a timeout.
func (l *leaseLab) mustBeFenced(t *testing.T, what string) {
	t.Helper()
	c, err := l.dial(l.b.Netns, l.addr, silence)
	if err == nil {
		c.Close()
		t.Fatalf("%s: dial from b to the fenced address connected", what)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: dial failed with %v, want a timeout (the SYN dropped, not refused)", what, err)
	}
}

// arpAnswer asks, from b, who has the leased address.
func (l *leaseLab) arpAnswer(t *testing.T) (net.HardwareAddr, bool) {
	t.Helper()
	mac, taken, err := Probe(context.Background(), l.b, l.addr, silence)
	if err != nil {
		t.Fatalf("arp probe from b: %v", err)
	}
	return mac, taken
}

func (l *leaseLab) install(t testing.TB) {
	t.Helper()
	if err := InstallLease(l.a, l.addr); err != nil {
		t.Fatal(err)
	}
}

func (l *leaseLab) grant(t testing.TB, ttl time.Duration) {
	t.Helper()
	if err := Grant(l.a, l.addr, ttl); err != nil {
		t.Fatal(err)
	}
}

func (l *leaseLab) lease(t testing.TB) LeaseInfo {
	t.Helper()
	info, err := LeaseOf(l.a, l.addr)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// nft opens an nftables connection into ns, for looking at what the fence
// left in the kernel.
func nft(t testing.TB, ns string) *nftables.Conn {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fenceDrops sums the drop counters of the fence's chains in ns.
func fenceDrops(t testing.TB, ns string) uint64 {
	t.Helper()
	c := nft(t, ns)
	var n uint64
	for _, tc := range []struct {
		table *nftables.Table
		chain string
	}{{leaseTables()[0], "input"}, {leaseTables()[0], "output"}, {leaseTables()[1], "output"}} {
		rules, err := c.GetRules(tc.table, &nftables.Chain{Name: tc.chain, Table: tc.table})
		if err != nil {
			t.Fatalf("rules of %s: %v", tc.chain, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					n += ctr.Packets
				}
			}
		}
	}
	return n
}
