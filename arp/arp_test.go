package arp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestFrameRoundTrip(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	ip := netip.MustParseAddr("198.19.254.100")
	g := Gratuitous(mac, ip)
	if g[0].Op != opRequest || g[1].Op != opReply {
		t.Fatalf("gratuitous ops = %d,%d, want request,reply", g[0].Op, g[1].Op)
	}
	for _, p := range g {
		f, err := p.Frame(broadcast)
		if err != nil {
			t.Fatal(err)
		}
		if len(f) != frameLen || !bytes.Equal(f[0:6], broadcast) || !bytes.Equal(f[6:12], mac) {
			t.Fatalf("bad ethernet header % x", f[:14])
		}
		q, err := ParseFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		if q.Op != p.Op || q.SenderIP != ip || q.TargetIP != ip || !bytes.Equal(q.SenderMAC, mac) || !bytes.Equal(q.TargetMAC, p.TargetMAC) {
			t.Fatalf("round trip: got %+v want %+v", q, p)
		}
	}
	if _, err := ParseFrame(make([]byte, 10)); err == nil {
		t.Fatal("short frame accepted")
	}
	junk := make([]byte, frameLen)
	if _, err := ParseFrame(junk); err == nil {
		t.Fatal("non-ARP frame accepted")
	}
	if _, err := (Packet{SenderMAC: mac, TargetMAC: mac, SenderIP: netip.MustParseAddr("::1"), TargetIP: ip}).Frame(broadcast); err == nil {
		t.Fatal("IPv6 sender accepted")
	}
	if _, err := Announce(context.Background(), Endpoint{Link: "lo"}, ip, WithRepeats(2), WithInterval(500*time.Millisecond)); err == nil {
		t.Fatal("interval under the locktime accepted")
	}
}

// segment is a test L2 segment: a switch namespace with a bridge and a
// number of stations, each a namespace with eth0 on the bridge.
type segment struct {
	t      *testing.T
	prefix string
	spaces []string
}

func newSegment(t *testing.T) *segment {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	s := &segment{t: t, prefix: fmt.Sprintf("escape-t-%d", os.Getpid()%100000)}
	t.Cleanup(func() {
		for _, ns := range s.spaces {
			if err := DeleteNetns(ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	sw := s.prefix + "-sw"
	_ = DeleteNetns(sw)
	if err := CreateNetns(sw); err != nil {
		t.Fatal(err)
	}
	s.spaces = append(s.spaces, sw)
	h, err := Handle(sw)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	return s
}

// station adds a namespace whose eth0 is plugged into the bridge.
func (s *segment) station(name string, addr string) Endpoint {
	s.t.Helper()
	ns := s.prefix + "-" + name
	_ = DeleteNetns(ns)
	if err := CreateNetns(ns); err != nil {
		s.t.Fatal(err)
	}
	s.spaces = append(s.spaces, ns)
	sw, err := Handle(s.prefix + "-sw")
	if err != nil {
		s.t.Fatal(err)
	}
	defer sw.Close()
	peer := "p-" + name
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: peer}, PeerName: "eth0"}
	if err := sw.LinkAdd(veth); err != nil {
		s.t.Fatal(err)
	}
	br, err := sw.LinkByName("br0")
	if err != nil {
		s.t.Fatal(err)
	}
	p, err := sw.LinkByName(peer)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := sw.LinkSetMaster(p, br); err != nil {
		s.t.Fatal(err)
	}
	if err := sw.LinkSetUp(p); err != nil {
		s.t.Fatal(err)
	}
	e, err := sw.LinkByName("eth0")
	if err != nil {
		s.t.Fatal(err)
	}
	target, err := Handle(ns)
	if err != nil {
		s.t.Fatal(err)
	}
	defer target.Close()
	f, err := os.Open(NetnsPath(ns))
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if err := sw.LinkSetNsFd(e, int(f.Fd())); err != nil {
		s.t.Fatal(err)
	}
	ep := Endpoint{Netns: ns, Link: "eth0"}
	if addr != "" {
		if err := AddAddress(ep, netip.MustParsePrefix(addr)); err != nil {
			s.t.Fatal(err)
		}
	} else {
		l, err := target.LinkByName("eth0")
		if err != nil {
			s.t.Fatal(err)
		}
		if err := target.LinkSetUp(l); err != nil {
			s.t.Fatal(err)
		}
	}
	return ep
}

// neighbourMAC returns the MAC the station's neighbour table holds for ip.
func neighbourMAC(t *testing.T, ep Endpoint, ip netip.Addr) string {
	t.Helper()
	h, err := Handle(ep.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ns, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && a == ip && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// poke sends one UDP datagram from the station to ip, which makes its
// kernel resolve ip.
func poke(t *testing.T, ep Endpoint, ip netip.Addr) {
	t.Helper()
	err := Do(ep.Netns, func() error {
		c, err := net.Dial("udp4", netip.AddrPortFrom(ip, 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func TestMoveAndAnnounceSwitchesNeighbourCache(t *testing.T) {
	s := newSegment(t)
	vip := netip.MustParsePrefix("198.19.254.100/24")
	nb := s.station("n", "198.19.254.1/24")
	a := s.station("a", vip.String())
	b := s.station("b", "")
	la, err := Link(a)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := Link(b)
	if err != nil {
		t.Fatal(err)
	}
	if la.MAC.String() == lb.MAC.String() {
		t.Fatal("stations share a MAC")
	}

	// The neighbour learns the address at A.
	waitFor(t, 5*time.Second, "neighbour to resolve the address at A", func() bool {
		poke(t, nb, vip.Addr())
		return neighbourMAC(t, nb, vip.Addr()) == la.MAC.String()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := MoveAddress(ctx, vip, a, b, WithProbe(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if has, err := HasAddress(a, vip); err != nil || has {
		t.Fatalf("A still has the address (%v, %v)", has, err)
	}
	if has, err := HasAddress(b, vip); err != nil || !has {
		t.Fatalf("B lacks the address (%v, %v)", has, err)
	}
	start := time.Now()
	ann, err := Announce(ctx, b, vip.Addr(), WithRepeats(3), WithInterval(1100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// No traffic from the neighbour: only the announcement can switch it.
	waitFor(t, 4*time.Second, "neighbour cache to switch to B", func() bool {
		return neighbourMAC(t, nb, vip.Addr()) == lb.MAC.String()
	})
	t.Logf("neighbour switched %v after the first announcement", time.Since(start))
	if err := ann.Wait(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 2200*time.Millisecond {
		t.Fatalf("3 rounds 1.1s apart took only %v", el)
	}
}

func TestMoveRefusesTakenAddressAndUndoes(t *testing.T) {
	s := newSegment(t)
	vip := netip.MustParsePrefix("198.19.254.100/24")
	a := s.station("a", vip.String())
	rogue := s.station("r", "198.19.254.50/24")
	b := s.station("b", "")
	_ = rogue
	// While A holds the address, probing from B sees it answered.
	mac, taken, err := Probe(context.Background(), b, vip.Addr(), 300*time.Millisecond)
	if err != nil || !taken {
		t.Fatalf("probe of a held address: taken=%v err=%v", taken, err)
	}
	la, _ := Link(a)
	if mac.String() != la.MAC.String() {
		t.Fatalf("probe answered by %v, want A %v", mac, la.MAC)
	}
	// The rogue station also claims the address: the move must fail with
	// ErrAddressTaken and leave it on A.
	if err := AddAddress(rogue, vip); err != nil {
		t.Fatal(err)
	}
	err = MoveAddress(context.Background(), vip, a, b, WithProbe(300*time.Millisecond))
	if !errors.Is(err, ErrAddressTaken) {
		t.Fatalf("move onto a taken address: err = %v, want ErrAddressTaken", err)
	}
	if has, _ := HasAddress(a, vip); !has {
		t.Fatal("failed move did not give the address back to A")
	}
	if has, _ := HasAddress(b, vip); has {
		t.Fatal("failed move left the address on B")
	}
	// Garbage in: an invalid prefix and a missing link are clear errors.
	if err := MoveAddress(context.Background(), netip.Prefix{}, a, b); err == nil {
		t.Fatal("invalid prefix accepted")
	}
	if err := AddAddress(Endpoint{Netns: a.Netns, Link: "nope0"}, vip); err == nil {
		t.Fatal("missing link accepted")
	}
	if err := CreateNetns("bad/name"); err == nil {
		t.Fatal("bad netns name accepted")
	}
}
