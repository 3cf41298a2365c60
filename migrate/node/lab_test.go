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
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"go.uber.org/zap/zaptest"
)

// The lab tests run Nodes against the lab's hosts: their containerds,
// CRIU, namespaces and bridges, with a redis client in the lab's client
// namespace on the same fabric.

const redisImage = "escape.local/redis:latest"

type testLab struct {
	inv    *lab.Inventory
	shared string // a shared storage for the test's nodes
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	inv := labtest.Ensure(t)
	return &testLab{inv: inv, shared: t.TempDir()}
}

// node returns a Node for the lab's host, on the test's shared storage if
// shared (else none), closed at cleanup.
func (l *testLab) node(t *testing.T, host string, shared bool, opts ...Option) *Node {
	t.Helper()
	state := t.TempDir()
	return l.newNode(t, host, shared, state, opts...)
}

// nodeAt is a node without shared storage on the given state directory
// (an agent started again).
func (l *testLab) nodeAt(t *testing.T, host, state string, opts ...Option) *Node {
	t.Helper()
	return l.newNode(t, host, false, state, opts...)
}

func (l *testLab) newNode(t *testing.T, host string, shared bool, state string, opts ...Option) *Node {
	t.Helper()
	h, ok := l.inv.Host(host)
	if !ok {
		t.Fatalf("no host %s in the lab", host)
	}
	cfg := Config{Name: h.Name, Containerd: h.Containerd, Namespace: l.inv.Namespace, Netns: h.Netns, Bridge: h.Bridge,
		CgroupParent: "escape/" + h.Name, RuncRoot: h.RuncRoot, CRIU: h.CRIU, StateDir: state}
	if shared {
		cfg.SharedDir = l.shared
	}
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

// redisSpec is a redis container with its address in the service range,
// removed from every node given at cleanup (even if the test failed).
func redisSpec(t *testing.T, id string, octet int, nodes ...*Node) migrate.Spec {
	t.Helper()
	s := migrate.Spec{
		ID:    id,
		Image: redisImage,
		Args:  []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"},
		IP:    netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(octet)}), 15),
		MAC:   fmt.Sprintf("02:e5:00:00:01:%02x", octet),
	}
	// Whatever an earlier run that died left goes first.
	for _, n := range nodes {
		if _, err := n.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	cleanupOn(t, id, nodes...)
	return s
}

// cleanupOn removes container id from the nodes at cleanup. Registered
// after the nodes, so it runs before they close.
func cleanupOn(t *testing.T, id string, nodes ...*Node) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, n := range nodes {
			if _, err := n.Remove(ctx, id); err != nil {
				t.Errorf("cleanup %s on %s: %v", id, n.Name(), err)
			}
			if arp.NetnsExists(n.ctNetns(id)) {
				t.Errorf("cleanup %s on %s: namespace left", id, n.Name())
			}
		}
	})
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

func wantStatus(t *testing.T, n *Node, id string, want migrate.Status) migrate.ContainerStatus {
	t.Helper()
	st, err := n.Status(context.Background(), id)
	if err != nil {
		t.Fatalf("status of %s on %s: %v", id, n.Name(), err)
	}
	if st.Status != want {
		t.Fatalf("%s on %s is %s, want %s", id, n.Name(), st.Status, want)
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

func readConfig(t *testing.T, n *Node, id string) string {
	t.Helper()
	b, err := os.ReadFile(n.criuConfig(id))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func imageDirOf(t *testing.T, n *Node, name migrate.ImageName) string {
	t.Helper()
	d, err := n.imagePath(name)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(d)
}

func sleepBriefly() { time.Sleep(50 * time.Millisecond) }
