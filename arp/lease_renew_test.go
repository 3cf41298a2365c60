package arp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// renewal is one way of renewing the lease.
type renewal int

const (
	// renewAtomic is Grant: one batch deleting and adding the element.
	renewAtomic renewal = iota
	// renewTwoBatches commits the delete, then the add, on one netlink
	// socket: the smallest gap two batches can have.
	renewTwoBatches
	// renewRevokeGrant is Revoke then Grant, each on its own socket, as an
	// agent built from the package's calls would renew without Grant's
	// atomicity.
	renewRevokeGrant
)

func (r renewal) String() string {
	return [...]string{"atomic (one batch: delete+add)", "two batches on one socket (delete, then add)", "Revoke, then Grant (two batches, two sockets)"}[r]
}

// renewer renews the lease every 100ms with a 500ms TTL, the way given,
// until stop closes.
func renewer(t *testing.T, l *leaseLab, how renewal, stop <-chan struct{}) <-chan error {
	errc := make(chan error, 1)
	h, err := netns.GetFromName(l.a.Netns)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer h.Close()
		defer c.CloseLasting()
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				errc <- nil
				return
			case <-tk.C:
			}
			var err error
			switch how {
			case renewAtomic:
				err = Grant(l.a, l.addr, 500*time.Millisecond)
			case renewTwoBatches:
				err = renewInTwoBatches(c, l.addr, 500*time.Millisecond)
			case renewRevokeGrant:
				if err = Revoke(l.a, l.addr); err == nil {
					err = Grant(l.a, l.addr, 500*time.Millisecond)
				}
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

// renewInTwoBatches is the renewal Grant must not be: a delete committed
// on its own, then an add.
func renewInTwoBatches(c *nftables.Conn, addr netip.Addr, ttl time.Duration) error {
	for _, tb := range leaseTables() {
		_, held := leaseSets(tb)
		if err := c.SetDeleteElements(held, []nftables.SetElement{leaseElement(addr, 0)}); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	for _, tb := range leaseTables() {
		_, held := leaseSets(tb)
		if err := c.SetAddElements(held, []nftables.SetElement{leaseElement(addr, ttl)}); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add: %w", err)
	}
	return nil
}

// stream sends n UDP echo requests from b to the leased address, a burst
// every millisecond, and returns how many got no echo.
func stream(t *testing.T, l *leaseLab, n int) int {
	t.Helper()
	var conn *net.UDPConn
	err := Do(l.b.Netns, func() error {
		var err error
		conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.addr, leaseEchoUDP)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadBuffer(4 << 20)
	got := make([]bool, n)
	done := make(chan int)
	go func() {
		buf := make([]byte, 64)
		count := 0
		for {
			k, err := conn.Read(buf)
			if err != nil {
				done <- count
				return
			}
			if k == 4 {
				if s := binary.BigEndian.Uint32(buf); int(s) < n && !got[s] {
					got[s] = true
					count++
				}
			}
		}
	}()
	const perTick = 4
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	msg := make([]byte, 4)
	for i := 0; i < n; {
		<-tk.C
		for j := 0; j < perTick && i < n; j++ {
			binary.BigEndian.PutUint32(msg, uint32(i))
			if _, err := conn.Write(msg); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			i++
		}
	}
	time.Sleep(300 * time.Millisecond) // the last echoes' way back
	_ = conn.SetReadDeadline(time.Now())
	return n - <-done
}

func TestLeaseRenewalIsAtomic(t *testing.T) {
	l := newLeaseLab(t)
	l.install(t)
	l.grant(t, 500*time.Millisecond)
	// 20000 requests, 4 a millisecond: about 5 s, some 50 renewals.
	const n = 20000
	run := func(how renewal) (lost int, drops uint64) {
		l.grant(t, 500*time.Millisecond)
		before := fenceDrops(t, l.a.Netns)
		stop := make(chan struct{})
		errc := renewer(t, l, how, stop)
		lost = stream(t, l, n)
		close(stop)
		if err := <-errc; err != nil {
			t.Fatalf("renewal %v: %v", how, err)
		}
		drops = fenceDrops(t, l.a.Netns) - before
		t.Logf("renewal %v: %d of %d requests lost, fence dropped %d packets", how, lost, n, drops)
		return lost, drops
	}
	if lost, drops := run(renewAtomic); lost != 0 || drops != 0 {
		t.Fatalf("atomic renewal lost %d of %d requests (fence dropped %d packets), want none", lost, n, drops)
	}
	// For the record: what renewing in two batches costs.
	run(renewTwoBatches)
	run(renewRevokeGrant)
	// The lease is still good after all: the stream measured the
	// renewals, not a lapse.
	if info := l.lease(t); !info.Held {
		t.Fatalf("lease after the streams: %+v", info)
	}
}

func BenchmarkGrant(b *testing.B) {
	l := newLeaseLab(b)
	l.install(b)
	h, err := netns.GetFromName(l.a.Netns)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.AsLasting())
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseLasting()
	// atomic is Grant as the agent calls it (its own socket each time);
	// two-batches is the non-atomic renewal on a socket kept open, which
	// skips the close that waits for the replaced element to be freed;
	// leaseof is one read, the floor of any call.
	b.Run("atomic", func(b *testing.B) {
		for b.Loop() {
			l.grant(b, 500*time.Millisecond)
		}
	})
	b.Run("two-batches", func(b *testing.B) {
		for b.Loop() {
			if err := renewInTwoBatches(c, l.addr, 500*time.Millisecond); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("leaseof", func(b *testing.B) {
		for b.Loop() {
			l.lease(b)
		}
	})
}
