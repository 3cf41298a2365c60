package migrate_test

// The observers of the fault matrix: who answers for the address on the
// wire, and which hosts hold it under a lease, sampled through every case.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
)

// ---- the ARP observer ----

// arpObserver probes the address from the client namespace every 5 ms,
// counts the MACs that answer there, and attributes every answer to the
// host whose fabric port it came in on.
type arpObserver struct {
	ip   netip.Addr
	mac  string
	stop chan struct{}
	wg   sync.WaitGroup

	round atomic.Int64

	fds []int

	mu        sync.Mutex
	macs      map[string]int
	byHost    map[string]int
	lastRound map[string]int64
	lastWhat  map[string]string
	lastAt    map[string]time.Time
	doubles   []string
	moves     []string
	lastHost  string
	errs      []error
}

// rawSocket opens a packet socket on link for proto (ETH_P_ALL on a bridge
// port: the bridge consumes a port's frames before protocol taps see them).
func rawSocket(netns, link string, proto uint16) (int, int, error) {
	li, err := arp.Link(arp.Endpoint{Netns: netns, Link: link})
	if err != nil {
		return -1, 0, err
	}
	fd := -1
	err = arp.Do(netns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(proto)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: li.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	return fd, li.Index, err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startARPObserver(t *testing.T, inv *lab.Inventory, ip netip.Addr, mac string, every ...time.Duration) *arpObserver {
	t.Helper()
	period := 5 * time.Millisecond
	if len(every) > 0 {
		period = every[0]
	}
	o := &arpObserver{lastAt: map[string]time.Time{}, ip: ip, mac: mac, stop: make(chan struct{}), macs: map[string]int{}, byHost: map[string]int{}, lastRound: map[string]int64{}, lastWhat: map[string]string{}}
	cfd, cidx, err := rawSocket(inv.Client.Netns, inv.Client.Link, unix.ETH_P_ARP)
	if err != nil {
		t.Fatalf("arp observer: %v", err)
	}
	cli, _ := arp.Link(arp.Endpoint{Netns: inv.Client.Netns, Link: inv.Client.Link})
	probe := arp.Packet{Op: 1, SenderMAC: cli.MAC, SenderIP: netip.IPv4Unspecified(), TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}
	frame, err := probe.Frame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	if err != nil {
		t.Fatal(err)
	}
	o.wg.Add(2)
	go func() { // sender
		defer o.wg.Done()
		to := &unix.SockaddrLinklayer{Ifindex: cidx, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			select {
			case <-o.stop:
				return
			case <-tk.C:
			}
			o.round.Add(1)
			if err := unix.Sendto(cfd, frame, 0, to); err != nil {
				o.fail(fmt.Errorf("send probe: %w", err))
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	o.fds = append(o.fds, cfd)
	go func() { // the client's view: which MACs answer
		defer o.wg.Done()
		o.listen(cfd, func(p arp.Packet, _ *unix.SockaddrLinklayer) {
			o.mu.Lock()
			o.macs[p.SenderMAC.String()]++
			o.mu.Unlock()
		})
	}()
	for _, h := range inv.Hosts {
		fd, _, err := rawSocket(inv.Fabric.Netns, h.Port, unix.ETH_P_ALL)
		if err != nil {
			t.Fatalf("arp observer on %s: %v", h.Port, err)
		}
		o.fds = append(o.fds, fd)
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.listen(fd, func(p arp.Packet, from *unix.SockaddrLinklayer) {
				if from.Pkttype == unix.PACKET_OUTGOING {
					return // flooded towards the host, not sent by it
				}
				o.answer(h.Name, fmt.Sprintf("type %d op %d target %v", from.Pkttype, p.Op, p.TargetIP), p)
			})
		}()
	}
	t.Cleanup(o.halt)
	return o
}

func (o *arpObserver) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs) < 5 {
		o.errs = append(o.errs, err)
	}
}

func (o *arpObserver) listen(fd int, fn func(arp.Packet, *unix.SockaddrLinklayer)) {
	buf := make([]byte, 1600)
	for {
		select {
		case <-o.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENETDOWN) {
			time.Sleep(10 * time.Millisecond) // a partitioned host's port is down
			continue
		}
		if err != nil {
			o.fail(fmt.Errorf("receive: %w", err))
			return
		}
		if n < 14 || buf[12] != 0x08 || buf[13] != 0x06 {
			continue // not ARP
		}
		p, err := arp.ParseFrame(buf[:n])
		if err != nil || p.SenderIP != o.ip {
			continue
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil {
			ll = &unix.SockaddrLinklayer{}
		}
		fn(p, ll)
	}
}

// answer records that host answered (or announced) the address in the
// current probe round.
func (o *arpObserver) answer(host, what string, p arp.Packet) {
	r := o.round.Load()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byHost[host]++
	mac := p.SenderMAC.String()
	if mac != o.mac {
		o.doubles = append(o.doubles, fmt.Sprintf("%s: %s answers from %s, not the container's MAC", time.Now().Format(time.StampMilli), mac, host))
	}
	for other, lr := range o.lastRound {
		if other != host && lr == r {
			o.doubles = append(o.doubles, fmt.Sprintf("%s: round %d answered from %s (%s) and %s (%s)", time.Now().Format(time.StampMilli), r, other, o.lastWhat[other], host, what))
		}
	}
	o.lastRound[host] = r
	o.lastWhat[host] = what
	o.lastAt[host] = time.Now()
	if o.lastHost != host {
		o.moves = append(o.moves, fmt.Sprintf("%s@%s", host, time.Now().Format("15:04:05.000")))
		o.lastHost = host
	}
}

// last is when host last spoke for the address.
func (o *arpObserver) last(host string) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastAt[host]
}

func (o *arpObserver) halt() {
	select {
	case <-o.stop:
		return
	default:
	}
	close(o.stop)
	o.wg.Wait()
	for _, fd := range o.fds {
		unix.Close(fd)
	}
}

func (o *arpObserver) check(t *testing.T) {
	t.Helper()
	o.halt()
	o.mu.Lock()
	defer o.mu.Unlock()
	rounds := o.round.Load()
	t.Logf("arp observer: %d probe rounds; MACs seen by the client %v; answers by host %v; answering host over time %v", rounds, o.macs, o.byHost, o.moves)
	if len(o.errs) > 0 {
		t.Errorf("arp observer: %v", o.errs)
	}
	if rounds < 50 || o.macs[o.mac] == 0 {
		t.Errorf("arp observer: %d rounds, %d answers from the container's MAC: it did not observe", rounds, o.macs[o.mac])
	}
	for m := range o.macs {
		if m != o.mac {
			t.Errorf("invariant broken: %s answered for %v, not the container's MAC %s", m, o.ip, o.mac)
		}
	}
	if len(o.doubles) > 0 {
		t.Errorf("invariant broken: two copies answered for the address: %v", o.doubles)
	}
}

// ---- the lease observer ----

// leaseObserver asks every host's agent, again and again, whether it
// serves the address: its copy runs, the address is on its interface and
// its lease is held. A host that answers the same generation twice in a
// row served between the two answers; no two hosts may have served at the
// same time.
type leaseObserver struct {
	f    *labFix
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	samples   map[string]int
	failed    map[string]int
	intervals map[string][]span // proven serving
	instant   int               // samples where two hosts said so (not proof)
	lastServe map[string]time.Time
}

type span struct {
	from, to time.Time
	gen      uint64
}

func startLeaseObserver(f *labFix) *leaseObserver {
	o := &leaseObserver{f: f, stop: make(chan struct{}), samples: map[string]int{}, failed: map[string]int{},
		intervals: map[string][]span{}, lastServe: map[string]time.Time{}}
	for _, n := range f.names {
		o.wg.Add(1)
		go o.watch(n)
	}
	f.t.Cleanup(o.halt)
	return o
}

func (o *leaseObserver) watch(host string) {
	defer o.wg.Done()
	type sample struct {
		ok, serving bool
		gen         uint64
		start, end  time.Time
	}
	var prev sample
	for {
		select {
		case <-o.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		st, err := o.f.obs[host].Status(ctx, o.f.spec.ID)
		cancel()
		cur := sample{ok: err == nil, start: start, end: time.Now()}
		if err == nil {
			cur.serving = st.Status == migrate.Running && slices.Contains(st.Addresses, o.f.spec.IP) && st.Lease.Held &&
				(st.Lease.Pinned || st.Lease.Remaining > 0)
			cur.gen = st.Lease.Generation
		}
		o.mu.Lock()
		o.samples[host]++
		if err != nil {
			o.failed[host]++
		}
		if cur.serving {
			o.lastServe[host] = cur.end
			for other, at := range o.lastServe {
				if other != host && cur.end.Sub(at) < 15*time.Millisecond {
					o.instant++
				}
			}
		}
		if prev.ok && cur.ok && prev.serving && cur.serving && prev.gen == cur.gen && start.After(prev.end) {
			iv := o.intervals[host]
			if k := len(iv) - 1; k >= 0 && iv[k].gen == cur.gen && iv[k].to.Equal(prev.start) {
				iv[k].to = start
			} else {
				iv = append(iv, span{from: prev.end, to: start, gen: cur.gen})
			}
			o.intervals[host] = iv
		}
		o.mu.Unlock()
		prev = cur
	}
}

func (o *leaseObserver) halt() {
	select {
	case <-o.stop:
		return
	default:
	}
	close(o.stop)
	o.wg.Wait()
}

func (o *leaseObserver) check(t *testing.T) {
	t.Helper()
	o.halt()
	o.mu.Lock()
	defer o.mu.Unlock()
	var hosts []string
	for h := range o.samples {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, " %s: %d samples (%d unanswered), serving", h, o.samples[h], o.failed[h])
		for _, s := range o.intervals[h] {
			fmt.Fprintf(&b, " [%s-%s gen %d]", s.from.Format("05.000"), s.to.Format("05.000"), s.gen)
		}
		b.WriteString(";")
	}
	t.Logf("lease observer:%s %d samples near another host's", b.String(), o.instant)
	for i, a := range hosts {
		for _, bh := range hosts[i+1:] {
			for _, x := range o.intervals[a] {
				for _, y := range o.intervals[bh] {
					if x.from.Before(y.to) && y.from.Before(x.to) {
						t.Errorf("invariant broken: %s (gen %d, %s-%s) and %s (gen %d, %s-%s) both served the address", a, x.gen,
							x.from.Format(time.StampMilli), x.to.Format(time.StampMilli), bh, y.gen, y.from.Format(time.StampMilli), y.to.Format(time.StampMilli))
					}
				}
			}
		}
	}
}
