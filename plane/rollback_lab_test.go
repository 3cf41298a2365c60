package plane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/escape-mtd/escape/plane"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"github.com/google/nftables"
)

// reopen closes p, as a plane that stopped, and starts a new plane on the
// same state, as the daemon's restart would.
func reopen(ctx context.Context, t *testing.T, p *plane.Plane, inv *lab.Inventory) *plane.Plane {
	t.Helper()
	cfg := p.ConfigForTest()
	if err := p.Close(); err != nil {
		t.Logf("close the first plane: %v", err)
	}
	p2 := openLabPlane(t, cfg, inv)
	if err := p2.Start(ctx); err != nil {
		t.Fatalf("start after a stop mid-rollback: %v", err)
	}
	return p2
}

// auditHas reports whether the audit log holds an event matching want.
func auditHas(t *testing.T, path string, want func(plane.AuditEvent) bool) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev plane.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if want(ev) {
			return true
		}
	}
	return false
}

// A rollback kills the running copy before it restores the checkpoint. A
// plane that stops in between, or a checkpoint that will not restore, must
// not leave the container without a live copy.
func TestPlaneRollbackInterruptedOrUnrestorable(t *testing.T) {
	p, inv := labPlane(t, plane.PolicyOverrides{CleanEpochs: ptr(1), RollbackLimit: ptr(10), Retain: ptr(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const id = "pl-rb"
	c, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: lab.ImageRef("redis"), Host: "h1", IP: "198.18.1.241",
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	ip := c.Spec.IP.Addr()
	counter := func(p *plane.Plane, want int64, when string) {
		t.Helper()
		if st := status(ctx, t, p, "h1", id); st.Status != migrate.Running {
			t.Fatalf("%s: container is %s, want running", when, st.Status)
		}
		rc := labtest.DialRedis(t, inv, ip, 15*time.Second)
		if n := incr(t, rc); n != want {
			t.Fatalf("%s: INCR = %d, want %d", when, n, want)
		}
	}
	epoch := uint64(0)
	checkpoint := func(p *plane.Plane) plane.CheckpointRecord {
		t.Helper()
		epoch++
		if _, err := p.HandleReport(ctx, plane.Report{Container: id, Epoch: epoch, Threshold: 3}, "test"); err != nil {
			t.Fatal(err)
		}
		ck, err := p.Checkpoint(ctx, id, false, "test")
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	// Two safe checkpoints: the counter is 1 in the older, 2 in the newer.
	counter(p, 1, "deployed")
	older := checkpoint(p)
	counter(p, 2, "after the first checkpoint")
	newer := checkpoint(p)
	counter(p, 3, "after the second checkpoint")

	// 1. Stopped after the kill: what the store and the host hold at that
	// point, then a restart.
	interrupt := func(p *plane.Plane, kill bool) {
		t.Helper()
		rec, err := p.Store().Container(id)
		if err != nil {
			t.Fatal(err)
		}
		rec.Rollback = &plane.PendingRollback{Checkpoint: newer.Seq, Started: time.Now()}
		if err := p.Store().PutContainer(rec); err != nil {
			t.Fatal(err)
		}
		if kill {
			h1, _ := p.Host("h1")
			if _, err := h1.Kill(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	settled := func(p *plane.Plane, when string) {
		t.Helper()
		rec, err := p.Store().Container(id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Rollback != nil {
			t.Errorf("%s: rollback still journalled: %+v", when, rec.Rollback)
		}
	}
	interrupt(p, true)
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range st.Containers {
		if cs.ID == id && (cs.RollingBack == nil || cs.RollingBack.Checkpoint != newer.Seq) {
			t.Errorf("status does not show the rollback in progress: %+v", cs)
		}
	}
	p = reopen(ctx, t, p, inv)
	counter(p, 3, "restart after a stop between kill and restore") // the newer checkpoint's 2, plus one
	settled(p, "restart after a stop between kill and restore")
	if !auditHas(t, auditPath(p), func(e plane.AuditEvent) bool {
		return e.Kind == "action" && e.Action == "rollback" && e.Actor == "recovery" && e.Outcome == "ok" && e.Container == id
	}) {
		t.Error("no audited recovery rollback")
	}

	// 2. Stopped before the kill: the copy that was to be replaced still
	// runs (its state moved on); the restart replaces it all the same.
	counter(p, 4, "before the second stop")
	interrupt(p, false)
	p = reopen(ctx, t, p, inv)
	counter(p, 3, "restart after a stop before the kill")
	settled(p, "restart after a stop before the kill")

	// 3. The newest checkpoint passes the image check but CRIU cannot
	// restore it: the older one is restored instead.
	dir := imageDir(t, inv, "h1", newer.Image)
	mms, err := filepath.Glob(filepath.Join(dir, "mm-*.img"))
	if err != nil || len(mms) == 0 {
		t.Fatalf("no mm image in %s: %v", dir, err)
	}
	if err := os.WriteFile(mms[0], []byte("not a CRIU image"), 0o600); err != nil {
		t.Fatal(err)
	}
	h1, _ := p.Host("h1")
	if _, err := h1.VerifyImage(ctx, newer.Image); err != nil {
		t.Fatalf("the damaged checkpoint should still pass the image check: %v", err)
	}
	res, err := p.Rollback(ctx, id, []string{"test"}, "test")
	if err != nil {
		t.Fatalf("rollback with an unrestorable newest checkpoint: %v", err)
	}
	if res.Checkpoint.Seq != older.Seq {
		t.Errorf("restored checkpoint %d, want the older %d", res.Checkpoint.Seq, older.Seq)
	}
	counter(p, 2, "rollback past an unrestorable checkpoint") // the older checkpoint's 1, plus one
	settled(p, "rollback past an unrestorable checkpoint")

	// 4. A CRIU lock table in the running copy's namespace, as a dump cut
	// short leaves it: reported when the plane starts, and removed by the
	// next rollback (whose first restore, of the damaged checkpoint, fails
	// and leaves a lock of its own, removed before the older one restores).
	const left = "CRIU-left-by-a-test"
	// The container's namespace is the host's; the test reaches it through
	// the container's first process, as an operator on that host would.
	pid := status(ctx, t, p, "h1", id).PID
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nft, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	nft.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: left})
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}
	p = reopen(ctx, t, p, inv)
	if !auditHas(t, auditPath(p), func(e plane.AuditEvent) bool {
		return e.Kind == "decision" && e.Container == id && e.Outcome == "failed" && slices.ContainsFunc(e.Reasons, func(r string) bool {
			return strings.Contains(r, left)
		})
	}) {
		t.Error("a lock table in the running copy's namespace was not reported at start")
	}
	if _, err := p.Rollback(ctx, id, []string{"test"}, "test"); err != nil {
		t.Fatalf("rollback with a lock table left: %v", err)
	}
	h1, _ = p.Host("h1")
	if locks, err := h1.NetworkLocks(ctx, id, false); err != nil || len(locks) != 0 {
		t.Fatalf("lock tables after the rollback: %v (%v), want none", locks, err)
	}
	counter(p, 2, "rollback with a lock table left")
}

// freezeCgroup freezes (or thaws) every process of pid's cgroup, through the
// v1 freezer where the host mounts one, else cgroup v2's cgroup.freeze.
func freezeCgroup(t *testing.T, pid uint32, on bool) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var file, value string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(f[1], ","), "freezer"):
			file, value = filepath.Join("/sys/fs/cgroup/freezer", f[2], "freezer.state"), "THAWED"
			if on {
				value = "FROZEN"
			}
		case f[0] == "0" && file == "":
			root := "/sys/fs/cgroup"
			if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
				root = "/sys/fs/cgroup/unified"
			}
			file, value = filepath.Join(root, f[2], "cgroup.freeze"), "0"
			if on {
				value = "1"
			}
		}
	}
	if file == "" {
		t.Fatalf("no freezer for pid %d in %q", pid, raw)
	}
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		t.Fatalf("freeze %v: %v", on, err)
	}
}

// A client whose connection the kernel completed while the service was
// frozen, and which the service never accepted, must not fail a dump (it
// did: "In-flight connection", and a migration reverted in the demo).
func TestPlaneCheckpointWithConnectionInFlight(t *testing.T) {
	p, inv := labPlane(t, plane.PolicyOverrides{CleanEpochs: ptr(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "pl-inflight"
	c, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: lab.ImageRef("redis"), Host: "h1", IP: "198.18.1.242",
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	ip := c.Spec.IP.Addr()
	if n := incr(t, labtest.DialRedis(t, inv, ip, 15*time.Second)); n != 1 {
		t.Fatalf("first INCR = %d", n)
	}
	if _, err := p.HandleReport(ctx, plane.Report{Container: id, Epoch: 1, Threshold: 3}, "test"); err != nil {
		t.Fatal(err)
	}
	pid := status(ctx, t, p, "h1", id).PID
	freezeCgroup(t, pid, true)
	thawed := false
	defer func() {
		if !thawed {
			freezeCgroup(t, pid, false)
		}
	}()
	pending := labtest.DialRedis(t, inv, ip, 15*time.Second) // handshake done by the kernel; never accepted yet
	if _, err := p.Checkpoint(ctx, id, false, "test"); err != nil {
		t.Fatalf("checkpoint with a connection in flight: %v", err)
	}
	freezeCgroup(t, pid, false)
	thawed = true
	if st := status(ctx, t, p, "h1", id); st.Status != migrate.Running {
		t.Fatalf("after the checkpoint the container is %s", st.Status)
	}
	// The dump left the service running: the pending client is served.
	if n := incr(t, pending); n != 2 {
		t.Fatalf("INCR on the connection that was in flight = %d, want 2", n)
	}
}

// imageDir is where host's agent keeps the named checkpoint image, as the
// root namespace sees it: on the shared storage when the lab has it, else
// in the host's own state directory. Only a test that damages an image on
// purpose looks; the plane never does.
func imageDir(t *testing.T, inv *lab.Inventory, host string, image migrate.ImageName) string {
	t.Helper()
	if inv.SharedStorage {
		return filepath.Join(inv.Shared, "escape", "images", string(image))
	}
	h, ok := inv.Host(host)
	if !ok {
		t.Fatalf("no host %s", host)
	}
	return filepath.Join(h.Dir, "state", "agent", "images", string(image))
}
