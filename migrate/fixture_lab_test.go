package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

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
