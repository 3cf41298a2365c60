package node

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// A rollback restored lazily holds the copy until every page is in, then
// lets it go: the value stored before the checkpoint is whole.
func TestNodeLazyRollback(t *testing.T) {
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1")
	s := redisSpec(t, "nd-lazy", 156, n)
	ctx := testCtx(t)
	if _, err := n.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, 1)}); err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	blob := []byte(strings.Repeat("lazy-", 1_000_000))
	if err := rc.Set("blob", blob, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	img := migrate.CheckpointImage(s.ID, 1, 1)
	if _, err := n.Checkpoint(ctx, s.ID, img, migrate.CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	var held bool
	n.afterLazyStart = func() { held = presentGuards(ctx, n.ctNetns(s.ID), guardHold) == guardHold }
	res, err := n.Restore(ctx, s, img, migrate.RestoreOptions{Lazy: true, TCPClose: true, ClearLocks: true})
	if err != nil || !res.Lazy || res.Did != "restored" {
		t.Fatalf("lazy restore: %+v, %v", res, err)
	}
	if !held {
		t.Fatal("the copy was not held while its pages came in")
	}
	if g := presentGuards(ctx, n.ctNetns(s.ID), guardHold|guardResets); g != 0 {
		t.Fatalf("guards %#x left after the lazy restore", g)
	}
	if c := readConfig(t, n, s.ID); hasLazy([]byte(c)) || strings.Contains(c, optTCPClose) {
		t.Fatalf("restore options left in the CRIU configuration:\n%s", c)
	}
	rc2 := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	got, err := rc2.Get("blob", 20*time.Second)
	if err != nil || string(got) != string(blob) {
		t.Fatalf("value after the lazy restore: %d bytes, %v", len(got), err)
	}
}

// The lazy-pages daemon fails once the restore has connected to it: killed
// (the restore is stopped at once) or stopped (the restore is stopped
// before the step's deadline). Either way the step fails, no copy and no
// process of the restore is left, lazy-pages is out of the CRIU
// configuration, nothing stays mounted in the work directory, and the same
// checkpoint then restores in full.
func TestNodeLazyRestoreFaults(t *testing.T) {
	for _, tc := range []struct {
		name, signal string
		octet        int
		want         []string
	}{
		{"dies", "KILL", 157, []string{"lazy-pages daemon died; stopped the restore", "memory incomplete"}},
		{"hangs", "STOP", 158, []string{"restore stalled; stopped the restore", "memory not complete"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLab(t)
			if !l.inHost(t, "h1") {
				return
			}
			h, _ := l.inv.Host("h1")
			// Inside h1: its own /tmp is where the node's CRIU runs too.
			wrapper := labtest.LazyDaemonFault(t, t.TempDir(), h.CRIU, tc.signal, 0)
			n := l.node(t, "h1")
			n.cfg.CRIU = wrapper
			s := redisSpec(t, "nd-lazy-"+tc.name, tc.octet, n)
			ctx := testCtx(t)
			if _, err := n.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, 1)}); err != nil {
				t.Fatal(err)
			}
			rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
			mustIncr(t, rc, 1)
			img := migrate.CheckpointImage(s.ID, 1, 1)
			if _, err := n.Checkpoint(ctx, s.ID, img, migrate.CheckpointOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Kill(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			sctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			_, err := n.Restore(sctx, s, img, migrate.RestoreOptions{Lazy: true, TCPClose: true, ClearLocks: true})
			cancel()
			t.Logf("error: %v", err)
			if err == nil || !slices.ContainsFunc(tc.want, func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Fatalf("lazy restore with a failing daemon: %v; want one of %q", err, tc.want)
			}
			if st := wantStatus(t, n, s.ID, migrate.Created); st.PID != 0 {
				t.Fatalf("a copy is left: %+v", st)
			}
			if pids, err := n.cgroupProcs(s.ID); err != nil || len(pids) > 0 {
				t.Fatalf("processes left in the cgroup: %v (%v)", pids, err)
			}
			if hasLazy([]byte(readConfig(t, n, s.ID))) {
				t.Fatal("lazy-pages left in the CRIU configuration")
			}
			_, work := n.workDirs(img)
			if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), work) {
				t.Fatalf("mounts left in the work directory (%v)", err)
			}
			res, err := n.Restore(ctx, s, img, migrate.RestoreOptions{TCPClose: true, ClearLocks: true})
			if err != nil || res.Lazy {
				t.Fatalf("full restore after the failed lazy one: %+v, %v", res, err)
			}
			rc2 := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
			mustIncr(t, rc2, 2)
		})
	}
}
