package migrate

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"go.uber.org/zap/zaptest"
)

// testLab is the lab plus a runtime over its hosts.
type testLab struct {
	inv *lab.Inventory
	rt  *Runtime
	dir string // per-test directory on shared storage
}

func hostsOf(inv *lab.Inventory) []Host {
	var hs []Host
	for _, h := range inv.Hosts {
		hs = append(hs, Host{Name: h.Name, Netns: h.Netns, Bridge: h.Bridge, Socket: h.Containerd, Namespace: inv.Namespace, CRIU: h.CRIU})
	}
	return hs
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	inv := labtest.Ensure(t)
	rt, err := NewRuntime(hostsOf(inv), WithRuntimeLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(inv.Shared, "escape-test", fmt.Sprintf("migrate-%d", os.Getpid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rt.Close()
		_ = os.RemoveAll(dir)
	})
	return &testLab{inv: inv, rt: rt, dir: dir}
}

// redisSpec prepares a redis container whose root filesystem is a copy of
// the lab image on shared storage, and registers its removal everywhere.
func (l *testLab) redisSpec(t *testing.T, id string, lastOctet int) Spec {
	t.Helper()
	root := filepath.Join(l.dir, id, "rootfs")
	if err := os.MkdirAll(filepath.Dir(root), 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", l.inv.Images["redis"].RootFS, root).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v: %s", err, out)
	}
	conf := filepath.Join(l.dir, id, "criu.conf")
	if err := os.WriteFile(conf, []byte(testCRIUConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	s := Spec{
		ID:         id,
		RootFS:     root,
		Args:       []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"},
		IP:         netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(lastOctet)}), 15),
		MAC:        fmt.Sprintf("02:e5:00:00:01:%02x", lastOctet),
		CRIUConfig: conf,
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, h := range l.inv.Hosts {
			if err := l.rt.Remove(ctx, h.Name, id); err != nil {
				t.Errorf("cleanup %s on %s: %v", id, h.Name, err)
			}
		}
	})
	return s
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

// testCRIUConfig is the container's CRIU configuration in these tests: the
// plane's, less its mount masks.
const testCRIUConfig = "tcp-established\nnetwork-lock nftables\n"

func TestRuntimeCheckpointRestoreKeepsTCP(t *testing.T) {
	l := newTestLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := l.redisSpec(t, "rt-basic", 201)
	if err := l.rt.Start(ctx, "h1", s); err != nil {
		t.Fatal(err)
	}
	if st, err := l.rt.State(ctx, "h1", s.ID); err != nil || st != Running {
		t.Fatalf("state after start = %v, %v", st, err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1)

	// A checkpoint without exit leaves it running.
	t0 := time.Now()
	if err := l.rt.Checkpoint(ctx, "h1", s.ID, filepath.Join(l.dir, "ck1"), WithWorkDir(filepath.Join(l.dir, "ck1-work"))); err != nil {
		t.Fatal(err)
	}
	t.Logf("leave-running checkpoint: %v", time.Since(t0))
	if st, _ := l.rt.State(ctx, "h1", s.ID); st != Running {
		t.Fatalf("state after leave-running checkpoint = %v", st)
	}
	mustIncr(t, rc, 2)

	// Move by hand to h2.
	t0 = time.Now()
	if err := l.rt.Checkpoint(ctx, "h1", s.ID, filepath.Join(l.dir, "ck2"), Exit(), WithWorkDir(filepath.Join(l.dir, "ck2-work"))); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	if st, _ := l.rt.State(ctx, "h1", s.ID); st != Stopped {
		t.Fatalf("state after exit checkpoint = %v", st)
	}
	if err := l.rt.PrepareNetwork("h2", s, false); err != nil {
		t.Fatal(err)
	}
	if err := arp.MoveAddress(ctx, s.IP, CtEndpoint("h1", s.ID), CtEndpoint("h2", s.ID)); err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	if err := l.rt.Restore(ctx, "h2", s, filepath.Join(l.dir, "ck2"), RestoreWorkDir(filepath.Join(l.dir, "rs2-work")), Fresh()); err != nil {
		t.Fatal(err)
	}
	t3 := time.Now()
	if _, err := arp.Announce(ctx, CtEndpoint("h2", s.ID), s.IP.Addr(), arp.WithRepeats(1)); err != nil {
		t.Fatal(err)
	}
	if err := l.rt.Remove(ctx, "h1", s.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("dump %v, prepare+move %v, restore %v", t1.Sub(t0), t2.Sub(t1), t3.Sub(t2))
	mustIncr(t, rc, 3)
}
