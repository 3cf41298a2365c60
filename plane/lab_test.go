package plane_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/escape-mtd/escape/plane"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"go.uber.org/zap/zaptest"
)

func labPlane(t *testing.T, defaults plane.PolicyOverrides) (*plane.Plane, *lab.Inventory) {
	t.Helper()
	inv := labtest.Ensure(t)
	return openLabPlane(t, labConfig(t, inv, defaults), inv), inv
}

// labConfig is the lab's plane configuration for a plane in the test's
// process: its state and audit log belong to the test.
func labConfig(t *testing.T, inv *lab.Inventory, defaults plane.PolicyOverrides) plane.Config {
	t.Helper()
	cfg, err := inv.PlaneConfigIn(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Defaults = defaults
	return cfg
}

// openLabPlane opens a plane on cfg that reaches the agents only over the
// fabric, from the plane's network namespace, with the plane's
// certificate; at the end of the test it removes the containers the plane
// then knows and closes it.
func openLabPlane(t *testing.T, cfg plane.Config, inv *lab.Inventory) *plane.Plane {
	t.Helper()
	p, err := plane.New(cfg, plane.WithLogger(zaptest.NewLogger(t)), plane.WithAgentDialer(labtest.PlaneDialer(inv)),
		plane.WithMigrateOptions(migrate.WithStepTimeout(30*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs, _ := p.Store().Containers()
		for _, c := range cs {
			if err := p.Remove(ctx, c.Spec.ID, "test cleanup"); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		p.Close()
	})
	return p
}

// status asks the container's agent on host for its state.
func status(ctx context.Context, t *testing.T, p *plane.Plane, host, id string) migrate.ContainerStatus {
	t.Helper()
	h, err := p.Host(host)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.Status(ctx, id)
	if err != nil {
		t.Fatalf("status of %s on %s: %v", id, host, err)
	}
	return st
}

// incr sends INCR k over rc, failing the test on any error.
func incr(t *testing.T, rc *labtest.Redis) int64 {
	t.Helper()
	n, err := rc.Incr("k", 15*time.Second)
	if err != nil {
		t.Fatalf("INCR: %v", err)
	}
	return n
}

// checkMounts asserts what migrate/mounts.go promises of a running
// container, restored or not: no tmpfs on /run, and runc's masked
// directories present, empty and read-only.
func checkMounts(t *testing.T, p *plane.Plane, host, id, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := status(ctx, t, p, host, id)
	if st.Status != migrate.Running || st.PID == 0 {
		t.Fatalf("%s: %s on %s is %s (pid %d)", when, id, host, st.Status, st.PID)
	}
	pid := st.PID
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	masks := 0
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 6 || len(g) < 3 {
			continue
		}
		switch f[4] {
		case "/run":
			t.Errorf("%s: /run is a mount again: %s", when, line)
		case "/proc/acpi", "/sys/firmware":
			masks++
			// Read-only where it cannot be undone: in the superblock.
			if !slices.Contains(strings.Split(g[2], ","), "ro") {
				t.Errorf("%s: masked %s has a writable superblock: %s", when, f[4], line)
			}
			dir := fmt.Sprintf("/proc/%d/root%s", pid, f[4])
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
				t.Errorf("%s: masked %s shows %d entries (%v)", when, f[4], len(ents), err)
			}
			if err := os.WriteFile(filepath.Join(dir, "escape-probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
				t.Errorf("%s: writing into masked %s: %v, want EROFS", when, f[4], err)
			}
		}
	}
	// Both exist on the lab's kernel (ACPI and firmware in sysfs).
	if masks != 2 {
		t.Errorf("%s: %d masked directories mounted, want 2:\n%s", when, masks, mi)
	}
}

func TestPlaneCheckpointRollbackEscalation(t *testing.T) {
	p, inv := labPlane(t, plane.PolicyOverrides{CleanEpochs: ptr(2), RollbackLimit: ptr(2), Retain: ptr(2), CheckpointInterval: ptr(plane.Duration(time.Second))})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := p.Deploy(ctx, plane.ContainerConfig{ID: "pl-db", Image: lab.ImageRef("redis"), Host: "h1", IP: "198.18.1.240",
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	ip := c.Spec.IP.Addr()
	rc := labtest.DialRedis(t, inv, ip, 15*time.Second)
	if n := incr(t, rc); n != 1 {
		t.Fatalf("first INCR = %d", n)
	}
	checkMounts(t, p, "h1", "pl-db", "deployed")
	epoch := uint64(0)
	report := func(anomalous bool) plane.Decision {
		t.Helper()
		epoch++
		d, err := p.HandleReport(ctx, plane.Report{Container: "pl-db", Epoch: epoch, Anomalous: anomalous, Mismatches: 7, Threshold: 3}, "test")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// No clean epochs yet: no safe checkpoint, periodic or manual.
	if _, err := p.Checkpoint(ctx, "pl-db", false, "test"); !errors.Is(err, plane.ErrNotSafe) {
		t.Fatalf("checkpoint without clean epochs: %v", err)
	}
	p.CheckpointDue(ctx)
	if cks, _ := p.Store().Checkpoints("pl-db"); len(cks) != 0 {
		t.Fatal("periodic checkpoint taken without clean epochs")
	}
	report(false)
	report(false)
	// Periodic checkpoints: three rounds, retention 2.
	var images []migrate.ImageName
	for i := 0; i < 3; i++ {
		if i > 0 {
			time.Sleep(1100 * time.Millisecond)
			report(false)
		}
		p.CheckpointDue(ctx)
		cks, _ := p.Store().Checkpoints("pl-db")
		if len(cks) == 0 || cks[len(cks)-1].SafeEpoch != epoch {
			t.Fatalf("round %d: no checkpoint safe as of epoch %d: %+v", i, epoch, cks)
		}
		images = append(images, cks[len(cks)-1].Image)
		t.Logf("checkpoint %d took %v, %d bytes", cks[len(cks)-1].Seq, time.Duration(cks[len(cks)-1].Took), cks[len(cks)-1].Bytes)
	}
	if st := status(ctx, t, p, "h1", "pl-db"); st.Status != migrate.Running {
		t.Fatalf("container not running after checkpoints: %s", st.Status)
	}
	cks, _ := p.Store().Checkpoints("pl-db")
	if len(cks) != 2 {
		t.Fatalf("retention 2 kept %d", len(cks))
	}
	h1, _ := p.Host("h1")
	if _, err := h1.VerifyImage(ctx, images[0]); err == nil {
		t.Fatalf("pruned checkpoint image %s still verifies", images[0])
	}
	for _, img := range images[1:] {
		if _, err := h1.VerifyImage(ctx, img); err != nil {
			t.Fatalf("kept checkpoint image %s: %v", img, err)
		}
	}
	// State moves on past the checkpoint (counter 1 at checkpoint time).
	for want := int64(2); want <= 4; want++ {
		if n := incr(t, rc); n != want {
			t.Fatalf("INCR = %d, want %d", n, want)
		}
	}

	// Anomaly 1 and 2: rollbacks to the checkpoint (counter back to 1).
	for i := 1; i <= 2; i++ {
		d := report(true)
		t.Logf("decision %d: %+v", i, d)
		if d.Action != "rollback" || d.Outcome != "ok" || d.Host != "h1" {
			t.Fatalf("anomaly %d: decision %+v", i, d)
		}
		rc2 := labtest.DialRedis(t, inv, ip, 15*time.Second)
		if n := incr(t, rc2); n != 2 {
			t.Fatalf("after rollback %d INCR = %d, want 2 (state of the checkpoint)", i, n)
		}
		checkMounts(t, p, "h1", "pl-db", fmt.Sprintf("rollback %d", i))
	}
	// A checkpoint now would not be safe: the streak restarted.
	if _, err := p.Checkpoint(ctx, "pl-db", false, "test"); !errors.Is(err, plane.ErrNotSafe) {
		t.Fatalf("checkpoint right after rollback: %v", err)
	}
	// Anomaly 3: the limit is reached, escalate to live migration; the
	// model picks the host, never the source.
	d := report(true)
	t.Logf("escalation: %+v", d)
	if d.Action != "migrate" || d.Outcome != "ok" || d.Host == "h1" || d.Host == "" {
		t.Fatalf("escalation decision %+v", d)
	}
	c, _ = p.Store().Container("pl-db")
	if c.Host != d.Host {
		t.Fatalf("placement %s, decision %s", c.Host, d.Host)
	}
	rc3 := labtest.DialRedis(t, inv, ip, 15*time.Second)
	if n := incr(t, rc3); n != 3 {
		t.Fatalf("after migration INCR = %d, want 3 (state carried over)", n)
	}
	checkMounts(t, p, c.Host, "pl-db", "migrated")
	if n, _ := p.Store().Rollbacks("pl-db", time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("rollback counter not reset after migration: %d", n)
	}

	// Every other host flagged: when escalation comes again, there is no
	// eligible destination and the plane falls back to rollback.
	for _, h := range inv.Hosts {
		if h.Name != c.Host {
			if _, err := p.Flag(h.Name, true, "test", "test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	report(false)
	report(false)
	if _, err := p.Checkpoint(ctx, "pl-db", false, "test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if d := report(true); d.Action != "rollback" || d.Outcome != "ok" {
			t.Fatalf("rollback before the limit: %+v", d)
		}
	}
	d = report(true)
	t.Logf("no-eligible decision: %+v", d)
	if d.Action != "rollback" || d.Outcome != "ok" || !strings.Contains(strings.Join(d.Reasons, ";"), "no eligible destination") {
		t.Fatalf("fallback decision %+v", d)
	}
	if _, err := p.Migrate(ctx, "pl-db", "", nil, "test"); err == nil {
		t.Fatal("operator migration found a destination with every other host flagged")
	}

	// Drain: unflag one host and drain the current one.
	var free string
	for _, h := range inv.Hosts {
		if h.Name != c.Host {
			free = h.Name
			break
		}
	}
	if _, err := p.Flag(free, false, "test", "test"); err != nil {
		t.Fatal(err)
	}
	ds, err := p.Drain(ctx, c.Host, "test")
	if err != nil || len(ds) != 1 || ds[0].Host != free {
		t.Fatalf("drain: %+v %v", ds, err)
	}
	rc4 := labtest.DialRedis(t, inv, ip, 15*time.Second)
	if n := incr(t, rc4); n < 2 {
		t.Fatalf("after drain INCR = %d", n)
	}
	st, err := p.Status(ctx)
	if err != nil || len(st.Containers) != 1 || st.Containers[0].Host != free || st.Containers[0].State != "running" {
		t.Fatalf("status %+v %v", st, err)
	}
	// The audit log holds every decision with its reasons.
	evs, err := plane.ReadAudit(auditPath(p))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, ev := range evs {
		kinds[ev.Kind+"/"+ev.Action+ev.Decision]++
	}
	t.Logf("audit: %v", kinds)
	if kinds["decision/rollback"] < 5 || kinds["decision/migrate"] != 1 || kinds["action/migrate"] < 2 || kinds["action/checkpoint"] < 4 {
		t.Fatalf("audit log incomplete: %v", kinds)
	}
}

func TestPlaneStatelessRestartAndReplicate(t *testing.T) {
	p, inv := labPlane(t, plane.PolicyOverrides{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}
	for _, tc := range []struct {
		id, action string
		octet      int
	}{{"pl-web-r", "restart", 241}, {"pl-web-x", "replicate", 242}} {
		c, err := p.Deploy(ctx, plane.ContainerConfig{ID: tc.id, Image: lab.ImageRef("redis"), Host: "h1", IP: fmt.Sprintf("198.18.1.%d", tc.octet), Args: args,
			Labels: map[string]string{"escape.mtd/class": "stateless", "escape.mtd/stateless-action": tc.action}}, "test")
		if err != nil {
			t.Fatal(err)
		}
		rc := labtest.DialRedis(t, inv, c.Spec.IP.Addr(), 15*time.Second)
		incr(t, rc)
		incr(t, rc)
		d, err := p.HandleReport(ctx, plane.Report{Container: tc.id, Epoch: 1, Anomalous: true}, "test")
		if err != nil || d.Action != tc.action || d.Outcome != "ok" {
			t.Fatalf("%s: %+v %v", tc.id, d, err)
		}
		want := "h1"
		if tc.action == "replicate" {
			if d.Host == "h1" {
				t.Fatalf("replicated onto the source")
			}
			want = d.Host
		}
		if st := status(ctx, t, p, want, tc.id); st.Status != migrate.Running {
			t.Fatalf("%s on %s: %s", tc.id, want, st.Status)
		}
		// A fresh copy: the counter starts again.
		if n := incr(t, labtest.DialRedis(t, inv, c.Spec.IP.Addr(), 15*time.Second)); n != 1 {
			t.Fatalf("%s: fresh copy INCR = %d", tc.id, n)
		}
	}
}

func auditPath(p *plane.Plane) string { return p.AuditPath() }

func ptr[T any](v T) *T { return &v }
