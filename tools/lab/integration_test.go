package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/tools/doctor"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// machineState is what the lab called name may leave behind, read from
// the machine itself rather than from the lab's own bookkeeping. Links are
// those of the root namespace, which no lab may touch.
type machineState struct {
	netns, links, mounts []string
	procs                map[int]string
}

func snapshot(t *testing.T, name string) machineState {
	t.Helper()
	var s machineState
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			s.netns = append(s.netns, e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		s.links = append(s.links, l.Attrs().Name)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		// Other labs (the shared one) may come and go meanwhile: only
		// this lab's mounts and namespaces count.
		if f := strings.Fields(line); len(f) > 4 && (strings.Contains(f[4], "/"+name+"-lab") || strings.Contains(f[4], "/netns/"+name+"-")) {
			s.mounts = append(s.mounts, f[4])
		}
	}
	s.procs = map[int]string{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmd, []byte(name+"-lab")) {
			s.procs[pid] = string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		}
	}
	slices.Sort(s.netns)
	slices.Sort(s.links)
	slices.Sort(s.mounts)
	return s
}

// added lists what is in after but not in before, for any slice.
func added(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	return out
}

// TestLabLifecycle builds a lab of its own (its own name, so it never
// touches the shared lab other tests use), runs a container in it, tears
// it down, and compares the machine before and after.
func TestLabLifecycle(t *testing.T) {
	if reason := doctor.LabUnavailable(context.Background()); reason != "" {
		t.Skipf("lab unavailable: %s", reason)
	}
	const name = "escapelc"
	opts := []lab.Option{lab.WithName(name), lab.WithHosts(2), lab.WithSharedSize("256m")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = lab.Down(ctx, opts...) // a previous crashed run
	before := snapshot(t, name)

	// Concurrent ups are serialized: both succeed and agree on the lab.
	var wg sync.WaitGroup
	invs := make([]*lab.Inventory, 2)
	errs := make([]error, 2)
	for i := range invs {
		wg.Add(1)
		go func() { defer wg.Done(); invs[i], errs[i] = lab.Up(ctx, opts...) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("up #%d: %v", i, err)
		}
	}
	if invs[0].Hosts[1].Containerd != invs[1].Hosts[1].Containerd {
		t.Fatalf("concurrent ups built different labs")
	}
	inv := invs[0]
	if st := lab.GetStatus(ctx, opts...); !st.Healthy() || len(st.Hosts) != 2 {
		t.Fatalf("status after up: %+v", st)
	}
	_, _, counter := runCounter(ctx, t, inv, inv.Hosts[0], "lifecycle")
	time.Sleep(300 * time.Millisecond)
	if readCounter(t, counter) < 1 {
		t.Fatal("the lab's container is not running")
	}

	during := snapshot(t, name)
	if len(added(before.netns, during.netns)) < 4 || len(added(before.mounts, during.mounts)) == 0 || len(during.procs) < 2 {
		t.Fatalf("the lab left no trace while up (netns %v, mounts %v, procs %v): the before/after check would prove nothing",
			added(before.netns, during.netns), added(before.mounts, during.mounts), during.procs)
	}
	if left := lab.Leftovers(opts...); len(left) == 0 {
		t.Fatal("Leftovers reports nothing while the lab is up")
	}
	checkKdatSeeded(ctx, t)

	if err := lab.Down(ctx, opts...); err != nil {
		t.Fatalf("down: %v", err)
	}
	after := snapshot(t, name)
	if a := added(before.netns, after.netns); len(a) > 0 {
		t.Errorf("namespaces left: %v", a)
	}
	if a := added(before.links, after.links); len(a) > 0 {
		t.Errorf("links left in the root namespace: %v", a)
	}
	if a := added(before.mounts, after.mounts); len(a) > 0 {
		t.Errorf("mounts left: %v", a)
	}
	if len(after.procs) > 0 {
		t.Errorf("processes left: %v", after.procs)
	}
	if left := lab.Leftovers(opts...); len(left) > 0 {
		t.Errorf("Leftovers after down: %v", left)
	}
	if !runOnTmpfs() {
		if _, err := os.Stat("/run/criu.kdat"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("down left CRIU's kdat cache behind (stat: %v)", err)
		}
	}
}

func runOnTmpfs() bool {
	var s unix.Statfs_t
	return unix.Statfs("/run", &s) == nil && s.Type == unix.TMPFS_MAGIC
}

// checkKdatSeeded: on a host whose /run is not a tmpfs, up installs CRIU's
// kernel-feature cache and CRIU really loads it (its log says so).
func checkKdatSeeded(ctx context.Context, t *testing.T) {
	t.Helper()
	if runOnTmpfs() {
		t.Log("/run is a tmpfs: CRIU keeps its own kdat cache, nothing to seed")
		return
	}
	if _, err := os.Stat("/run/criu.kdat"); err != nil {
		t.Fatalf("up did not seed CRIU's kdat cache: %v", err)
	}
	logf := filepath.Join(t.TempDir(), "check.log")
	out, err := exec.CommandContext(ctx, filepath.Join(lab.DefaultPrefix, "bin", "criu"), "check", "-v4", "-o", logf).CombinedOutput()
	if err != nil {
		t.Fatalf("criu check: %v: %s", err, out)
	}
	b, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Loaded kdat cache from /run/criu.kdat") {
		t.Fatalf("criu did not load the seeded cache; its log:\n%s", lastLines(string(b), 20))
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// TestDownAfterCrashedUp simulates an up that died half way: a daemon
// killed and the inventory never written. Down must still clean up.
func TestDownAfterCrashedUp(t *testing.T) {
	if reason := doctor.LabUnavailable(context.Background()); reason != "" {
		t.Skipf("lab unavailable: %s", reason)
	}
	const name = "escapecr"
	opts := []lab.Option{lab.WithName(name), lab.WithHosts(2), lab.WithSharedSize("64m")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	inv, err := lab.Up(ctx, opts...)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	pid, err := os.ReadFile(inv.Hosts[0].PIDFile)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
		t.Fatalf("kill containerd %d: %v", p, err)
	}
	if err := os.Remove(lab.InventoryPath(inv.Root)); err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(ctx, opts...); err != nil {
		t.Fatalf("down after a crashed up: %v", err)
	}
	if left := lab.Leftovers(opts...); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// runCounter starts a busybox container on host that counts in a file,
// and returns its container and task. The counter proves later whether a
// restored process went on from its saved state or started over.
func runCounter(ctx context.Context, t *testing.T, inv *lab.Inventory, host lab.Host, id string) (containerd.Container, containerd.Task, string) {
	t.Helper()
	// The counter is written to a host directory bind-mounted into the
	// container, so the test reads it from the host: no exec, no FIFOs.
	outDir := t.TempDir()
	c, err := containerd.New(host.Containerd)
	if err != nil {
		t.Fatalf("connect %s: %v", host.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	ctx = namespaces.WithNamespace(ctx, inv.Namespace)
	if old, err := c.LoadContainer(ctx, id); err == nil { // a previous failed run
		if task, err := old.Task(ctx, nil); err == nil {
			task.Delete(ctx, containerd.WithProcessKill)
		}
		old.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	img, err := c.GetImage(ctx, inv.Images["busybox"].Ref)
	if err != nil {
		t.Fatalf("image on %s: %v", host.Name, err)
	}
	ctr, err := c.NewContainer(ctx, id,
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{Root: host.RuncRoot}),
		containerd.WithNewSnapshot(id+"-snap", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithCgroup(inv.CgroupsPath(host.Name, id)),
			oci.WithMounts([]specs.Mount{{Destination: "/out", Type: "bind", Source: outDir, Options: []string{"rbind", "rw"}}}),
			oci.WithProcessArgs("/bin/sh", "-c", `i=0; while true; do i=$((i+1)); echo $i > /out/c.tmp; mv /out/c.tmp /out/counter; sleep 0.05; done`)))
	if err != nil {
		t.Fatalf("create container on %s: %v", host.Name, err)
	}
	t.Cleanup(func() {
		cctx := namespaces.WithNamespace(context.Background(), inv.Namespace)
		if task, err := ctr.Task(cctx, nil); err == nil {
			task.Delete(cctx, containerd.WithProcessKill)
		}
		ctr.Delete(cctx, containerd.WithSnapshotCleanup)
	})
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	return ctr, task, filepath.Join(outDir, "counter")
}

func readCounter(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read counter: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("counter reads %q: %v", data, err)
	}
	return n
}

// TestCheckpointRestoreOnHost checkpoints a container on one lab host into
// shared storage, which stops it, and restores it on the same host from
// there: the process must go on from its saved state.
func TestCheckpointRestoreOnHost(t *testing.T) {
	inv := labtest.Ensure(t)
	host := inv.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctr, task, counter := runCounter(ctx, t, inv, host, "cr-counter")
	ctx = namespaces.WithNamespace(ctx, inv.Namespace)
	time.Sleep(2 * time.Second)

	dir := filepath.Join(inv.Shared, "checkpoints", "lab-test", "cr-counter")
	os.RemoveAll(dir)
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(dir)) })
	before := readCounter(t, counter)
	if before < 10 {
		t.Fatalf("counter only reached %d before the checkpoint", before)
	}
	if _, err := task.Checkpoint(ctx, containerd.WithCheckpointImagePath(dir), func(ci *containerd.CheckpointTaskInfo) error {
		ci.Options.(*options.CheckpointOptions).Exit = true
		return nil
	}); err != nil {
		t.Fatalf("checkpoint on %s: %v", host.Name, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
		t.Fatalf("no CRIU image in shared storage: %v", err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Stopped {
		t.Fatalf("task after checkpoint with exit: %v %v", st.Status, err)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete checkpointed task: %v", err)
	}

	restored, err := ctr.NewTask(ctx, cio.NullIO, containerd.WithRestoreImagePath(dir))
	if err != nil {
		t.Fatalf("restore on %s: %v", host.Name, err)
	}
	if err := restored.Start(ctx); err != nil {
		t.Fatalf("start restored task: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	after := readCounter(t, counter)
	if after <= before {
		t.Fatalf("restored process started over or stalled: counter %d before the checkpoint, %d after the restore", before, after)
	}
}
