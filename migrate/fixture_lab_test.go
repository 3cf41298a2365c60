package migrate_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// The fault matrix over the network: real migrations of a redis container
// between the lab's hosts (machines of their own, each with its agent),
// through a Migrator whose hosts are agentapi clients dialed as the plane
// from the plane's namespace. Each case runs under three observers:
//
//   - arpObserver, in the client namespace, ARP-probes the service address
//     every few milliseconds and records every MAC that answers; on the
//     fabric's bridge it listens on every host's port, so that it knows
//     which host each answer came from (both copies share the MAC): no
//     probe round may be answered from two hosts;
//   - leaseObserver asks every host's agent, all the time, whether it
//     serves the address (running, the address on its interface, its
//     lease held): no two hosts may be proven to serve at one time;
//   - redisClient holds a connection and sends INCR after INCR: the
//     counter goes on by one (by two at most after a request whose answer
//     was lost), so no state is lost and no second copy answers.

const (
	labTTL         = 3 * time.Second
	labStepTimeout = 20 * time.Second
)

var redisArgs = []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}

// labFix is one case: its lab, container, journal and observers.
type labFix struct {
	t     *testing.T
	inv   *lab.Inventory
	spec  migrate.Spec
	names []string
	// obs are the test's own links to the agents (the plane's certificate),
	// never the migrator's.
	obs   map[string]*agentapi.Client
	store *plane.Store
	dir   string
	// gen is the generation the container was deployed at.
	gen uint64

	arp   *arpObserver
	lease *leaseObserver
	redis *redisClient
}

// newLabFix deploys a fresh redis with id on host, at service address
// .octet, and starts the observers.
func newLabFix(t *testing.T, id string, octet int, host string) *labFix {
	t.Helper()
	inv := labtest.Ensure(t)
	f := &labFix{t: t, inv: inv, obs: map[string]*agentapi.Client{}, dir: t.TempDir()}
	for _, h := range inv.Hosts {
		f.names = append(f.names, h.Name)
	}
	// Whatever the case did to the lab, the next one finds it whole.
	t.Cleanup(func() { f.restoreLab() })
	f.restoreLab()
	base := inv.ServiceRange.Addr().As4()
	base[3] = byte(octet)
	ip := netip.AddrFrom4(base)
	f.spec = migrate.Spec{ID: id, Image: lab.ImageRef("redis"), Args: redisArgs, IP: netip.PrefixFrom(ip, inv.Subnet.Bits()),
		MAC: fmt.Sprintf("02:e5:%02x:%02x:%02x:%02x", base[0], base[1], base[2], base[3]), NetworkLock: "nftables"}
	for _, n := range f.names {
		f.obs[n] = labtest.AgentClient(t, inv, n)
	}
	st, err := plane.OpenStore(filepath.Join(f.dir, "plane.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.store = st
	f.deploy(host)
	t.Cleanup(func() { f.removeEverywhere() })
	f.arp = startARPObserver(t, inv, ip, f.spec.MAC)
	f.lease = startLeaseObserver(f)
	f.redis = startRedis(t, inv, ip)
	f.redis.waitCount(t, 3, 20*time.Second)
	return f
}

// restoreLab heals every fault a case may have left: agents up, ports up,
// plane links whole.
func (f *labFix) restoreLab() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range f.names {
		if err := lab.Heal(f.inv, n); err != nil {
			f.t.Logf("heal %s: %v", n, err)
		}
		if err := lab.HealPlaneLink(f.inv, n); err != nil {
			f.t.Logf("heal plane link %s: %v", n, err)
		}
		if err := lab.StartAgent(ctx, f.inv, n, nil); err != nil {
			f.t.Errorf("start agent %s: %v", n, err)
		}
	}
}

// status asks host's agent for the container's status, again for a while
// if the agent does not answer (its link reconnects after a restart).
func (f *labFix) status(ctx context.Context, host string) (migrate.ContainerStatus, error) {
	for end := time.Now().Add(15 * time.Second); ; {
		st, err := f.obs[host].Status(ctx, f.spec.ID)
		if err == nil || !errors.Is(err, migrate.ErrUnreachable) || time.Now().After(end) {
			return st, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (f *labFix) hello(host string) migrate.HostInfo {
	f.t.Helper()
	for end := time.Now().Add(15 * time.Second); ; {
		info, err := f.obs[host].Hello(context.Background())
		if err == nil {
			return info
		}
		if time.Now().After(end) {
			f.t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (f *labFix) removeEverywhere() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range f.names {
		_, _ = f.status(ctx, n)
		if _, err := f.obs[n].Remove(ctx, f.spec.ID); err != nil {
			f.t.Logf("remove %s on %s: %v", f.spec.ID, n, err)
		}
	}
}

// deploy starts the container on host as the plane's Deploy does: above
// any generation a host remembers, with the address under a pinned lease.
func (f *labFix) deploy(host string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f.removeEverywhere()
	gen := uint64(1)
	for _, n := range f.names {
		st, err := f.status(ctx, n)
		if err != nil {
			f.t.Fatal(err)
		}
		if st.Lease.Generation >= gen {
			gen = st.Lease.Generation + 1
		}
	}
	h := f.obs[host]
	if _, err := h.EnsureImage(ctx, f.spec.Image, nil); err != nil {
		f.t.Fatal(err)
	}
	if _, err := h.Start(ctx, f.spec, migrate.StartOptions{Address: true, Lease: migrate.Lease{IP: f.spec.IP.Addr(), Generation: gen}}); err != nil {
		f.t.Fatal(err)
	}
	f.gen = gen
}

// hostSet is a migrator's own links to the agents, dialed as the plane
// does (plane/agents.go): mutual TLS from the files, reloaded when they
// change, from the plane's namespace.
type hostSet struct {
	m      migrate.HostMap
	closed atomic.Bool
}

func (s *hostSet) Host(name string) (migrate.Host, bool) { h, ok := s.m[name]; return h, ok }

func (s *hostSet) close() {
	if s.closed.Swap(true) {
		return
	}
	for _, h := range s.m {
		_ = h.Close()
	}
}

func (f *labFix) hostsWith(files mtls.Files, log *zap.Logger) *hostSet {
	f.t.Helper()
	src, err := mtls.NewSource(files, mtls.WithLogger(log.Named("tls")), mtls.WithReloadCheck(100*time.Millisecond))
	if err != nil {
		f.t.Fatal(err)
	}
	s := &hostSet{m: migrate.HostMap{}}
	for _, h := range f.inv.Hosts {
		c, err := agentapi.NewClient(h.Name, h.Agent,
			agentapi.WithClientCredentials(src.ClientCredentials(mtls.Identity{Role: mtls.RoleAgent, Name: h.Name})),
			agentapi.WithDialer(labtest.PlaneDialer(f.inv)), agentapi.WithClientLogger(log.Named(h.Name)),
			agentapi.WithDialOptions(grpc.WithChainUnaryInterceptor(mtls.UnaryClientInterceptor(src)),
				grpc.WithChainStreamInterceptor(mtls.StreamClientInterceptor(src))))
		if err != nil {
			f.t.Fatal(err)
		}
		s.m[h.Name] = c
	}
	f.t.Cleanup(s.close)
	return s
}

// migrator is a Migrator over hosts (the plane's certificate unless
// given) and the case's journal, with a short lease TTL and step timeout.
func (f *labFix) migrator(hosts migrate.Hosts, j migrate.Journal, opts ...migrate.Option) *migrate.Migrator {
	f.t.Helper()
	log := zaptest.NewLogger(f.t, zaptest.Level(zap.InfoLevel))
	if hosts == nil {
		hosts = f.hostsWith(f.inv.Plane.TLS, log)
	}
	if j == nil {
		j = f.store
	}
	opts = append([]migrate.Option{migrate.WithLogger(log), migrate.WithLeaseTTL(labTTL), migrate.WithStepTimeout(labStepTimeout),
		migrate.WithAnnounce(2, 1100*time.Millisecond)}, opts...)
	m, err := migrate.New(hosts, j, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// settle runs Recover until the journal is empty (a host may still be
// coming back), and returns the last outcome.
func (f *labFix) settle(m *migrate.Migrator) migrate.Outcome {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last migrate.Outcome
	for i := 0; ; i++ {
		recs, err := f.store.Migrations(ctx)
		if err != nil {
			f.t.Fatal(err)
		}
		if len(recs) == 0 {
			return last
		}
		res, err := m.Recover(ctx)
		for _, r := range res {
			logResult(f.t, "recover", r)
			last = r.Outcome
		}
		if err != nil {
			f.t.Logf("recover: %v", err)
		}
		if recs, err := f.store.Migrations(ctx); err == nil && len(recs) == 0 {
			return last
		}
		if i == 10 {
			f.t.Fatalf("journal not settled after %d recoveries: %+v", i+1, recs)
		}
		// A host just started again may not answer yet (its link
		// reconnects with a backoff).
		time.Sleep(time.Second)
	}
}

// placement asserts that exactly one host runs the container, host, with
// the address under a held lease, that no other host runs it or has the
// address, and that nothing is journalled.
func (f *labFix) placement(host string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range f.names {
		st, err := f.status(ctx, n)
		if err != nil {
			f.t.Fatalf("status on %s: %v", n, err)
		}
		has := slices.Contains(st.Addresses, f.spec.IP)
		if n == host {
			if st.Status != migrate.Running || !has || !st.Lease.Held || !st.Lease.Pinned {
				f.t.Fatalf("on %s: %s, address %v, lease %+v; want running with the address under a pinned lease", n, st.Status, has, st.Lease)
			}
		} else if st.Status != migrate.Absent || has || st.Network {
			f.t.Fatalf("leftover on %s: %s, address %v, network %v", n, st.Status, has, st.Network)
		}
	}
	recs, err := f.store.Migrations(ctx)
	if err != nil || len(recs) != 0 {
		f.t.Fatalf("journal not settled: %v %+v", err, recs)
	}
}

// finish stops the observers and asserts what they saw; the redis
// counter must go on from where it was, on the kept connection or a new
// one.
func (f *labFix) finish() {
	f.t.Helper()
	f.redis.waitCount(f.t, f.redis.count()+3, 30*time.Second)
	f.redis.check(f.t)
	f.arp.check(f.t)
	f.lease.check(f.t)
}

func logResult(t *testing.T, what string, res migrate.Result) {
	t.Helper()
	var b strings.Builder
	for _, s := range res.Steps {
		fmt.Fprintf(&b, " %s", s.Step)
		if s.Undo {
			b.WriteString("(undo)")
		}
		fmt.Fprintf(&b, "=%v", s.Duration.Round(time.Millisecond))
		if s.Err != "" {
			b.WriteString("!")
		}
	}
	t.Logf("%s: outcome %s, frozen %v, steps:%s, pending %q", what, res.Outcome, res.Frozen.Round(time.Millisecond), b.String(), res.Pending)
}

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

// ---- the redis client ----

// redisClient keeps a connection to the service from the client
// namespace and sends INCR after INCR on it; if the connection breaks, it
// opens another. Each answer must be the last one plus one (plus two if
// the request before went unanswered: it may have been applied).
type redisClient struct {
	inv  *lab.Inventory
	ip   netip.Addr
	stop chan struct{}
	done chan struct{}

	mu         sync.Mutex
	last       int64
	lastOK     time.Time
	maxGap     time.Duration
	gapAt      time.Time
	reconnects int
	breaks     []string
	bad        []string
}

func startRedis(t *testing.T, inv *lab.Inventory, ip netip.Addr) *redisClient {
	c := &redisClient{inv: inv, ip: ip, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.halt)
	return c
}

func (c *redisClient) dial() (net.Conn, error) {
	var conn net.Conn
	err := arp.Do(c.inv.Client.Netns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(c.ip, 6379).String(), time.Second)
		return err
	})
	return conn, err
}

func incr(conn net.Conn, r *bufio.Reader, timeout time.Duration) (int64, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(conn, "*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n"); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, ":") {
		return 0, fmt.Errorf("redis answered %q", line)
	}
	return strconv.ParseInt(strings.TrimSpace(line[1:]), 10, 64)
}

func (c *redisClient) run() {
	defer close(c.done)
	var conn net.Conn
	var r *bufio.Reader
	lost := false // the request before went unanswered
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		if conn == nil {
			var err error
			if conn, err = c.dial(); err != nil {
				conn = nil
				time.Sleep(50 * time.Millisecond)
				continue
			}
			r = bufio.NewReader(conn)
			c.mu.Lock()
			if !c.lastOK.IsZero() {
				c.reconnects++
			}
			c.mu.Unlock()
		}
		// Long enough to outlast a host's lease lapse and a restore: a
		// kept connection is given every chance to come back.
		v, err := incr(conn, r, 40*time.Second)
		now := time.Now()
		c.mu.Lock()
		if err != nil {
			c.breaks = append(c.breaks, fmt.Sprintf("%s: %v", now.Format("15:04:05.000"), err))
			conn.Close()
			conn = nil
			lost = true
			c.mu.Unlock()
			continue
		}
		if c.lastOK.IsZero() {
			if v < 1 {
				c.bad = append(c.bad, fmt.Sprintf("first INCR gave %d", v))
			}
		} else if v != c.last+1 && !(lost && v == c.last+2) {
			c.bad = append(c.bad, fmt.Sprintf("%s: INCR gave %d after %d (lost answer before: %v)", now.Format("15:04:05.000"), v, c.last, lost))
		}
		if !c.lastOK.IsZero() && now.Sub(c.lastOK) > c.maxGap {
			c.maxGap, c.gapAt = now.Sub(c.lastOK), now
		}
		c.last, c.lastOK, lost = v, now, false
		c.mu.Unlock()
	}
}

func (c *redisClient) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// gap is the longest time between two answers so far.
func (c *redisClient) gap() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxGap
}

func (c *redisClient) resetGap() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxGap = 0
}

func (c *redisClient) waitCount(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); c.count() < n; {
		if time.Now().After(end) {
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("redis counter at %d, want %d within %v; breaks %v", c.last, n, d, c.breaks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *redisClient) halt() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
}

func (c *redisClient) check(t *testing.T) {
	t.Helper()
	c.halt()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("redis client: counter %d, longest gap %v (at %s), %d reconnections, breaks %v", c.last, c.maxGap.Round(time.Millisecond),
		c.gapAt.Format("15:04:05.000"), c.reconnects, c.breaks)
	if len(c.bad) > 0 {
		t.Errorf("invariant broken: the counter did not go on: %v", c.bad)
	}
}

// ---- helpers ----

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func zapLogger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) }
