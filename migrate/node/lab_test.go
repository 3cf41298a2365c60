package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"go.uber.org/zap/zaptest"
)

// The lab tests run against the lab's hosts, each a machine of its own
// (network and mount namespaces, containerd, CRIU, bridge), with a redis
// client in the lab's client namespace on the same fabric. Two kinds:
//
//   - A test of one host runs a Node in the test's own process inside that
//     host (labtest.InHost re-executes the test binary there), where an
//     agent would run: the host's containerd socket, /run/netns, cgroups
//     and CRIU, and a state directory of the test's. There it can look at
//     the node's insides (hooks, configuration files, guards).
//   - A test of several hosts drives each host's real agent (escape-sensor
//     run, built from this tree) through its API, as the plane does, from
//     the root namespace: one process cannot be inside two hosts' mount
//     namespaces, and the agents move dumps and images between themselves
//     over the fabric as they do in production. Their insides it looks at
//     from the root namespace, where every host's files are.

const redisImage = "escape.local/redis:latest"

type testLab struct {
	inv *lab.Inventory
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	return &testLab{inv: labtest.Ensure(t)}
}

// inHost runs the test inside host (see labtest.InHost): false in the
// parent, which then returns; true inside host, where the test goes on.
func (l *testLab) inHost(t *testing.T, host string, env ...string) bool {
	t.Helper()
	return labtest.InHost(t, l.inv, host, env...)
}

// node returns a Node for host, the one this process runs inside, on a
// fresh state directory, without shared storage, closed at cleanup.
func (l *testLab) node(t *testing.T, host string, opts ...Option) *Node {
	t.Helper()
	return l.nodeAt(t, host, l.stateDir(t), opts...)
}

// stateDir is a fresh state directory under the host's /var/lib/escape (on
// disk: the host's /tmp is a small tmpfs), removed at cleanup.
func (l *testLab) stateDir(t *testing.T) string {
	t.Helper()
	if err := os.MkdirAll(labtest.TestsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(labtest.TestsDir, "node-")
	if err != nil {
		t.Fatal(err)
	}
	// Registered before any node on it, so it runs after they closed.
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// nodeAt is a node on the given state directory (an agent started again).
func (l *testLab) nodeAt(t *testing.T, host, state string, opts ...Option) *Node {
	t.Helper()
	if labtest.Child() != host {
		t.Fatalf("a node of %s runs inside %s only (call inHost first)", host, host)
	}
	h, ok := l.inv.Host(host)
	if !ok {
		t.Fatalf("no host %s in the lab", host)
	}
	cfg := Config{Name: h.Name, Containerd: lab.InsideContainerd, Namespace: l.inv.Namespace, Netns: "", Bridge: h.Bridge,
		CgroupParent: l.inv.CgroupParent + "/" + h.Name, RuncRoot: h.RuncRoot, CRIU: h.CRIU, StateDir: state}
	n, err := New(cfg, append([]Option{WithLogger(zaptest.NewLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil { // a no-op if the test closed it
			t.Errorf("close node %s: %v", host, err)
		}
	})
	return n
}

// agent is a host's real agent, reached as the plane reaches it.
type agent struct {
	*agentapi.Client
	inv *lab.Inventory
	h   lab.Host
}

func dialAgent(inv *lab.Inventory, host string) (*agent, error) {
	h, ok := inv.Host(host)
	if !ok {
		return nil, fmt.Errorf("no host %s in the lab", host)
	}
	c, err := lab.AgentClient(inv, host)
	if err != nil {
		return nil, err
	}
	return &agent{Client: c, inv: inv, h: h}, nil
}

// agent is host's agent, closed at cleanup.
func (l *testLab) agent(t *testing.T, host string) *agent {
	t.Helper()
	a, err := dialAgent(l.inv, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// peer names host h for another host's Fetch or EnsureImage: the address
// is its agent's.
func peer(h migrate.Host, tk migrate.Ticket) migrate.Peer {
	p := migrate.Peer{Name: h.Name(), Ticket: tk}
	if a, ok := h.(*agent); ok {
		p.Address = a.h.Agent
	}
	return p
}

// redisSpec is a redis container with its address in the service range,
// removed from every host given at cleanup (even if the test failed).
func redisSpec(t *testing.T, id string, octet int, hosts ...migrate.Host) migrate.Spec {
	t.Helper()
	s := migrate.Spec{
		ID:    id,
		Image: redisImage,
		Args:  []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"},
		IP:    netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(octet)}), 15),
		MAC:   fmt.Sprintf("02:e5:00:00:01:%02x", octet),
	}
	// Whatever an earlier run that died left goes first.
	for _, h := range hosts {
		if _, err := h.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	cleanupOn(t, id, hosts...)
	return s
}

// cleanupOn removes container id from the hosts at cleanup. Registered
// after the nodes, so it runs before they close; an agent is dialed again
// then, for the test may have restarted it.
func cleanupOn(t *testing.T, id string, hosts ...migrate.Host) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, h := range hosts {
			if a, ok := h.(*agent); ok {
				fresh, err := dialAgent(a.inv, a.h.Name)
				if err != nil {
					t.Errorf("cleanup %s on %s: %v", id, a.h.Name, err)
					continue
				}
				defer fresh.Close()
				h = fresh
			}
			if _, err := h.Remove(ctx, id); err != nil {
				t.Errorf("cleanup %s on %s: %v", id, h.Name(), err)
			}
			if netnsLeft(ctx, h, id) {
				t.Errorf("cleanup %s on %s: namespace left", id, h.Name())
			}
		}
	})
}

// netnsLeft reports whether container id's network namespace exists on h.
func netnsLeft(ctx context.Context, h migrate.Host, id string) bool {
	if a, ok := h.(*agent); ok {
		return lab.Command(ctx, a.inv, a.h.Name, "test", "-e", arp.NetnsPath(CtNetns(a.h.Name, id))).Run() == nil
	}
	return arp.NetnsExists(h.(*Node).ctNetns(id))
}

// seenGen is the highest lease generation any of the hosts remembers for
// container id: the real agents keep theirs across tests, so a test's
// generations start above it, as a new deployment's do.
func seenGen(t *testing.T, id string, hosts ...migrate.Host) uint64 {
	t.Helper()
	var g uint64
	for _, h := range hosts {
		st := wantStatus(t, h, id, migrate.Absent)
		g = max(g, st.Lease.Generation)
	}
	return g
}

func lease(ip netip.Prefix, gen uint64) migrate.Lease {
	return migrate.Lease{IP: ip.Addr(), Generation: gen}
}

func mustIncr(t *testing.T, rc *labtest.Redis, want int64) {
	t.Helper()
	got, err := rc.Incr("k", 10*time.Second)
	if err != nil {
		t.Fatalf("INCR (want %d): %v", want, err)
	}
	if got != want {
		t.Fatalf("INCR = %d, want %d", got, want)
	}
}

func wantDid(t *testing.T, what string, r migrate.StepResult, err error, want string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.Did != want {
		t.Fatalf("%s did %q, want %q", what, r.Did, want)
	}
}

func wantStatus(t *testing.T, h migrate.Host, id string, want migrate.Status) migrate.ContainerStatus {
	t.Helper()
	st, err := h.Status(context.Background(), id)
	if err != nil {
		t.Fatalf("status of %s on %s: %v", id, h.Name(), err)
	}
	if st.Status != want {
		t.Fatalf("%s on %s is %s, want %s", id, h.Name(), st.Status, want)
	}
	return st
}

func hasAddr(st migrate.ContainerStatus, ip netip.Prefix) bool {
	for _, a := range st.Addresses {
		if a == ip {
			return true
		}
	}
	return false
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// agentState is an agent's state directory (its /var/lib/escape/agent) as
// the root namespace sees it.
func (a *agent) agentState() string { return filepath.Join(a.h.Dir, "state", "agent") }

// readConfig is container id's CRIU configuration file on h.
func readConfig(t *testing.T, h migrate.Host, id string) string {
	t.Helper()
	path := filepath.Join("criu", id+".conf")
	if a, ok := h.(*agent); ok {
		path = filepath.Join(a.agentState(), path)
	} else {
		path = h.(*Node).criuConfig(id)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// guardsOf is presentGuards for container id on h; on an agent's host it
// looks from inside the host, where the container's namespace is named.
func guardsOf(ctx context.Context, h migrate.Host, id string, g guard) guard {
	a, ok := h.(*agent)
	if !ok {
		n := h.(*Node)
		return presentGuards(ctx, n.ctNetns(id), g)
	}
	var have guard
	for _, one := range []guard{guardResets, guardHold} {
		if g&one == 0 {
			continue
		}
		all := true
		for _, r := range one.rules() {
			args := append([]string{"--net=" + arp.NetnsPath(CtNetns(a.h.Name, id)), "iptables", "-w", "-C"}, r...)
			if lab.Command(ctx, a.inv, a.h.Name, "nsenter", args...).Run() != nil {
				all = false
			}
		}
		if all {
			have |= one
		}
	}
	return have
}

// imageDirOf is where h keeps the named image (for an agent, as the root
// namespace sees it: on the shared storage when the agent has it).
func imageDirOf(t *testing.T, h migrate.Host, name migrate.ImageName) string {
	t.Helper()
	if a, ok := h.(*agent); ok {
		info, err := a.Hello(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.SharedStorage != "" {
			return filepath.Join(a.inv.Shared, "escape", "images", string(name))
		}
		return filepath.Join(a.agentState(), "images", string(name))
	}
	d, err := h.(*Node).imagePath(name)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(d)
}

func sleepBriefly() { time.Sleep(50 * time.Millisecond) }
